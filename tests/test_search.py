"""`onnxprune search`: candidates made in worker processes, timed one at a time, their Pareto front
written to pareto.json; resumable; a dead worker costs one retry, not the search."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import onnx
import pytest

from conftest import FIXTURES
from onnxprune import BadInputError
from onnxprune.cli.main import main
from onnxprune.load.runtime import session
from onnxprune.search import PARETO_SCHEMA, pareto_front, search
from onnxprune.search.space import TARGETS, candidates

DIGITS = str(FIXTURES / "digits_cnn.onnx")
CALIB = str(FIXTURES / "digits_calib.npz")
TEST = str(FIXTURES / "digits_test.npz")


def fake_evaluate(job: dict) -> dict:
    """A candidate without pruning: the dense model, quality from its target (fast, deterministic)."""
    spec, folder = job["spec"], Path(job["out"])
    with open(folder / "calls.log", "a") as log:
        log.write(spec["id"] + "\n")
    shutil.copy(job["model"], folder / f"{spec['id']}.onnx")
    summary = {"id": spec["id"], "label": spec["label"], "spec": spec, "model_file": f"{spec['id']}.onnx",
               "macs": spec["prune"]["target_macs"], "params": 1.0, "fidelity": {},
               "quality": spec["prune"]["target_macs"] + (0.05 if spec["prune"]["scope"] == "local" else 0),
               "quality_name": "test"}
    (folder / f"{spec['id']}.json").write_text(json.dumps(summary))
    return summary


def dies_once(job: dict) -> dict:
    """The worker process dies the first time it meets a candidate, then works."""
    marker = Path(job["out"]) / f"{job['spec']['id']}.died"
    if not marker.exists():
        marker.write_text("")
        os._exit(1)
    return fake_evaluate(job)


def always_dies(job: dict) -> dict:
    os._exit(1)


def test_candidates_span_the_targets_first_and_depend_only_on_the_seed():
    first = candidates(len(TARGETS), seed=3)
    assert sorted(c["prune"]["target_macs"] for c in first) == sorted(TARGETS)
    assert candidates(12, seed=3) == candidates(12, seed=3) and candidates(12, seed=3) != candidates(12, seed=4)
    assert len({c["label"] for c in candidates(28)}) == 28


def test_the_front_keeps_exactly_the_undominated_points():
    points = [{"id": i, "latency_ratio": lat, "quality": q}
              for i, (lat, q) in enumerate([(0.5, 0.90), (0.6, 0.95), (0.55, 0.85), (0.7, 0.94), (0.4, 0.80)])]
    assert [p["id"] for p in pareto_front(points)] == [4, 0, 1]


def test_search_writes_a_front_of_runnable_models_and_resumes(tmp_path):
    out = tmp_path / "s"
    done = search(DIGITS, CALIB, out, budget=4, workers=2, rounds=2, evaluate=fake_evaluate)
    document = json.loads((out / "pareto.json").read_text())
    assert document["schema"] == PARETO_SCHEMA and document == done and not done["failed"]
    assert len(done["candidates"]) == 4
    front = [c for c in done["candidates"] if c["id"] in done["front"]]
    assert front == pareto_front(done["candidates"], tie=done["tie_width"])
    assert done["tie_width"] >= 0.01 and all(p["latency_noise"] >= 0 for p in done["candidates"])
    for point in done["candidates"]:
        assert point["latency_ratio"] > 0
        session(str(out / "candidates" / point["model_file"]))
    calls = (out / "candidates" / "calls.log").read_text().split()
    again = search(DIGITS, CALIB, out, budget=4, workers=2, rounds=2, evaluate=fake_evaluate)
    assert (out / "candidates" / "calls.log").read_text().split() == calls  # nothing redone
    assert again["front"] == done["front"]
    with pytest.raises(BadInputError, match="other settings"):
        search(DIGITS, CALIB, out, budget=6, evaluate=fake_evaluate)


def test_a_dead_worker_loses_only_its_candidate_once(tmp_path):
    done = search(DIGITS, CALIB, tmp_path / "a", budget=2, workers=2, rounds=2, evaluate=dies_once)
    assert not done["failed"] and len(done["candidates"]) == 2
    done = search(DIGITS, CALIB, tmp_path / "b", budget=1, workers=1, rounds=2, evaluate=always_dies)
    assert done["failed"] == [{"id": "c000", "error": "the worker process died (exit code 1)"}]
    assert not done["candidates"]


def test_search_command_prunes_real_candidates(tmp_path, capsys):
    out = tmp_path / "search"
    code = main(["search", DIGITS, "--calib", CALIB, "--data", TEST, "--budget", "1", "--no-int8",
                 "-o", str(out), "--rounds", "2"])
    assert code == 0
    document = json.loads((out / "pareto.json").read_text())
    dense = onnx.load(DIGITS)
    for point in document["candidates"]:
        model = onnx.load(str(out / "candidates" / point["model_file"]))
        assert point["quality_name"] == "accuracy" and 0.5 < point["quality"] <= 1
        assert point["macs"] < 1 and len(model.graph.initializer) >= len(dense.graph.initializer)
    assert "on the front" in capsys.readouterr().out


def test_search_refuses_a_file_as_its_folder(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("{}")
    assert main(["search", DIGITS, "--calib", CALIB, "-o", str(target), "--budget", "1"]) == 2
    assert target.read_text() == "{}"


METRIC = '''
import numpy as np
import onnxruntime as ort

def digits_accuracy(path):
    """Accuracy on the committed held-out digits, as a user's own metric would compute it."""
    data = np.load(TEST)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = sess.run(None, {name: data[name][:64]})[0]
    return float((logits.argmax(1) == data["labels"][:64]).mean())

def not_a_number(path):
    return "high"
'''


def test_search_ranks_by_a_user_metric_given_as_a_file(tmp_path, capsys):
    metric = tmp_path / "my_metric.py"
    metric.write_text(f"TEST = {TEST!r}\n" + METRIC)
    out = tmp_path / "search"
    code = main(["search", DIGITS, "--calib", CALIB, "--budget", "1", "--no-int8", "-o", str(out),
                 "--rounds", "2", "--metric", f"{metric}:digits_accuracy"])
    assert code == 0
    document = json.loads((out / "pareto.json").read_text())
    spec = {"__file__": str(metric)}
    exec(compile(metric.read_text(), str(metric), "exec"), spec)
    assert document["dense_quality"] == spec["digits_accuracy"](DIGITS)
    for point in document["candidates"]:  # the metric's own figure on the candidate written to disk
        assert point["quality_name"] == f"{metric}:digits_accuracy"
        assert point["quality"] == spec["digits_accuracy"](str(out / "candidates" / point["model_file"]))
    assert f"{metric}:digits_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "expected MODULE:FUNCTION"),
    ("{dir}/missing.py:f", "is not a file"),
    ("{dir}/my_metric.py:absent", "has no function absent"),
    ("no_such_module_xyz:f", "importing no_such_module_xyz failed"),
])
def test_a_metric_that_cannot_be_found_stops_before_any_work(tmp_path, capsys, spec, message):
    (tmp_path / "my_metric.py").write_text(f"TEST = {TEST!r}\n" + METRIC)
    out = tmp_path / "search"
    code = main(["search", DIGITS, "--calib", CALIB, "--budget", "1", "-o", str(out),
                 "--metric", spec.format(dir=tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]
    assert not out.exists() or not any((out / "candidates").iterdir())


def test_a_metric_that_returns_no_number_is_named(tmp_path):
    from onnxprune.search.metric import score
    (tmp_path / "my_metric.py").write_text(f"TEST = {TEST!r}\n" + METRIC)
    with pytest.raises(BadInputError, match="returned str, not a number"):
        score(f"{tmp_path}/my_metric.py:not_a_number", DIGITS)
