"""`onnxprune search --ray`: the same candidates and front as local worker processes, a dead Ray worker
costs its candidate one retry, and ray stays an optional import (tests marked `ray` start a local Ray
instance and are skipped when ray is not installed)."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import test_search
from onnxprune.cli.main import main
from onnxprune.load.runtime import session
from onnxprune.search import run as search_run
from onnxprune.search import search
from onnxprune.search.executors import LocalExecutor, RayExecutor
from test_search import CALIB, DIGITS, TEST, fake_evaluate


class DiesOnce:
    """Kills its worker the first time it meets a candidate (a marker outside the task's scratch
    folder remembers), then evaluates it."""

    def __init__(self, markers: str):
        self.markers = markers

    def __call__(self, job: dict) -> dict:
        marker = Path(self.markers) / job["spec"]["id"]
        if not marker.exists():
            marker.write_text("")
            os._exit(1)
        return fake_evaluate(job)


def always_fails(job: dict) -> dict:
    raise ValueError("no such layer: conv9\nsecond line")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the test helpers travel to the workers by value (tests/ is not on their path)
    ray.cloudpickle.register_pickle_by_value(test_search)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def latency_from_macs(model, points, folder, rounds, input_shapes):
    """A deterministic stand-in for the timing (the driver's job in both executors), so that the two
    fronts can be compared exactly: only what the workers made differs between the runs."""
    for point in points:
        point["latency_ratio"] = round(0.1 + point["macs"], 6)


@pytest.mark.ray
def test_ray_front_equals_the_local_front(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(search_run, "_measure_latency", latency_from_macs)
    kwargs = {"budget": 2, "data": TEST, "seed": 5, "space": "targets,scopes"}
    local = search(DIGITS, CALIB, tmp_path / "local", workers=LocalExecutor(2), **kwargs)
    executor = RayExecutor("local", 2)
    assert not executor.owned  # joined the fixture's instance, leaves it running
    on_ray = search(DIGITS, CALIB, tmp_path / "ray", workers=executor, **kwargs)
    executor.close()
    assert ray_cluster.is_initialized()
    assert not local["failed"] and not on_ray["failed"] and len(local["candidates"]) == 2
    assert on_ray["front"] == local["front"] and on_ray["candidates"] == local["candidates"]
    for point in local["candidates"]:  # the same pruned models, byte for byte
        assert point["quality_name"] == "accuracy" and point["macs"] < 1
        assert filecmp.cmp(tmp_path / "local" / "candidates" / point["model_file"],
                           tmp_path / "ray" / "candidates" / point["model_file"], shallow=False)


@pytest.mark.ray
def test_a_depth_candidate_on_ray_is_the_local_workers_model(ray_cluster, tmp_path):
    from onnxprune.search.run import evaluate_candidate
    from test_search_depth import depth_jobs

    calib = tmp_path / "image.npz"
    np.savez(calib, image=np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    local, on_ray = depth_jobs(tmp_path, str(calib), ("local", "ray"))
    assert LocalExecutor(1).run([local], evaluate_candidate) == []
    assert RayExecutor("local", 2).run([on_ray], evaluate_candidate) == []
    name = f"{local['spec']['id']}.onnx"
    assert filecmp.cmp(tmp_path / "local" / name, tmp_path / "ray" / name, shallow=False)


@pytest.mark.ray
def test_a_dead_ray_worker_loses_only_its_candidate_once(ray_cluster, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    done = search(DIGITS, CALIB, tmp_path / "a", budget=2, rounds=2, evaluate=DiesOnce(str(markers)),
                  workers=RayExecutor("local"))
    assert not done["failed"] and [c["id"] for c in done["candidates"]] == ["c000", "c001"]
    assert sorted(p.name for p in markers.iterdir()) == ["c000", "c001"]  # each died once
    done = search(DIGITS, CALIB, tmp_path / "b", budget=1, rounds=2, evaluate=always_fails,
                  workers=RayExecutor("local"))
    assert done["failed"] == [{"id": "c000", "error": "no such layer: conv9"}] and not done["candidates"]


@pytest.mark.ray
def test_search_command_on_ray(ray_cluster, tmp_path, capsys):
    out = tmp_path / "s"
    code = main(["search", DIGITS, "--calib", CALIB, "--data", TEST, "--budget", "1", "--no-int8", "--rounds", "2",
                 "-o", str(out), "--ray", "local"])
    assert code == 0 and "on the front" in capsys.readouterr().out
    point = json.loads((out / "pareto.json").read_text())["candidates"][0]
    assert point["quality_name"] == "accuracy" and 0.5 < point["quality"] <= 1 and point["latency_ratio"] > 0
    session(str(out / "candidates" / point["model_file"]))
    assert ray_cluster.is_initialized()  # joined, not started, so not stopped either


def test_ray_flag_without_ray_is_a_one_line_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = main(["search", DIGITS, "--calib", CALIB, "--budget", "1", "-o", str(tmp_path / "s"), "--ray", "local"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'onnxprune[ray]'" in err
    assert not (tmp_path / "s").exists()


def test_ray_is_imported_only_for_the_ray_flag():
    probe = ("import sys, onnxprune.cli.main, onnxprune.search.executors as e; e.make_executor(None, 2); "
             "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", probe], check=True)
