"""`onnxprune bench`: cost and measured speed side by side, a readable table and documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import FIXTURES
from onnxprune.check import energy
from onnxprune.report import schema
from onnxprune.check.bench import measure_latency, run_bench
from onnxprune.cli.main import main
from onnxprune.load.runtime import session

DIGITS = FIXTURES / "digits_cnn.onnx"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "digits_half.onnx"
    assert main(["prune", str(DIGITS), "-o", str(out), "--ratio", "0.5", "--bench-rounds", "0", "-q"]) == 0
    return out


def test_bench_json_two_models(pruned, capsys):
    code, out, err = run_cli(capsys, "bench", DIGITS, pruned, "--rounds", "5", "--warmup", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    schema.check(doc)
    assert doc["schema"] == "onnxprune.bench/1" and doc["batch"] == 1 and doc["rounds"] == 5
    dense, small = doc["models"]
    assert dense["latency_ratio"] == 1.0 and small["latency_ratio"] > 0
    assert small["params"] < dense["params"] and small["macs"] < dense["macs"]
    assert dense["size_bytes"] == DIGITS.stat().st_size
    for m in doc["models"]:
        assert m["macs"] == sum(layer["macs"] for layer in m["layers"]) > 0
        assert [layer["op"] for layer in m["layers"]] == ["Conv", "Conv", "Conv", "Gemm"]
        assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p90"]
        assert m["throughput_per_s"] == pytest.approx(1000.0 / m["latency_ms"]["p50"], rel=1e-2)
        assert m["memory"]["peak_bytes"] > 0 and "VmHWM" in m["memory"]["method"]  # Linux
        assert isinstance(m["energy"]["measurable"], bool)
        if not m["energy"]["measurable"]:
            assert "RAPL" in m["energy"]["reason"]


def test_bench_table_and_per_layer(pruned, capsys):
    code, out, _ = run_cli(capsys, "bench", DIGITS, pruned, "--rounds", "3", "--per-layer", "--no-memory")
    assert code == 0
    for row in ("params", "MACs / sample", "file size", "latency p50 (ms)", "latency p90 (ms)", "vs first (paired)",
                "samples/s @ batch 1", "peak memory", "energy", "/conv2/Conv", "total"):
        assert row in out
    assert "digits_cnn.onnx" in out and pruned.name in out


def test_bench_batch_with_data(pruned, capsys):
    code, out, _ = run_cli(capsys, "bench", pruned, "--data", FIXTURES / "digits_test.npz", "--batch", "16",
                           "--rounds", "3", "--no-memory", "--no-energy", "--json")
    assert code == 0
    doc = json.loads(out)
    schema.check(doc)
    [m] = doc["models"]
    assert doc["data"] == "given" and m["inputs"] == {"input": [16, 1, 8, 8]}
    assert m["throughput_per_s"] == pytest.approx(16 * 1000.0 / m["latency_ms"]["p50"], rel=1e-2)
    assert m["memory"] == {"skipped": True} and m["energy"]["measurable"] is False


def _fixed_batch_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["missing", "batch_zero", "fixed_batch", "unknown_shape", "too_few_samples",
                                  "rounds_zero"])
def test_bench_bad_input_exits_2(case, tmp_path, capsys):
    args = [DIGITS]
    if case == "missing":
        args = [tmp_path / "nope.onnx"]
    elif case == "batch_zero":
        args += ["--batch", "0"]
    elif case == "fixed_batch":
        args = [_fixed_batch_model(tmp_path / "fixed.onnx"), "--batch", "2"]
    elif case == "unknown_shape":
        args += ["--input-shape", "nosuch:1x2"]
    elif case == "too_few_samples":
        np.savez(tmp_path / "d.npz", input=np.zeros((2, 1, 8, 8), np.float32))
        args += ["--data", tmp_path / "d.npz", "--batch", "4"]
    elif case == "rounds_zero":
        args += ["--rounds", "0"]
    code, _, err = run_cli(capsys, "bench", *args, "--no-memory")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:")


def test_bench_does_not_refuse_integer_models(tmp_path, capsys):
    """Benchmarking a quantized model is legitimate, even though pruning one is not."""
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    w = helper.make_tensor("w", TensorProto.UINT8, [2, 1, 1, 1], [1, 2])
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="qconv")
    model = helper.make_model(helper.make_graph([node], "q", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(tmp_path / "int8.onnx"))
    code, out, err = run_cli(capsys, "bench", tmp_path / "int8.onnx", "--rounds", "2", "--no-memory", "--json")
    assert code == 0, err
    assert json.loads(out)["models"][0]["params"] == 0  # integer weights are not float parameters


def test_energy_from_rapl_counters(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    (tmp_path / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone (core): not counted twice
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000\n")
    counter = zone / "energy_uj"
    counter.write_text("999000\n")
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    state = {"uj": 999000}

    def run():  # every inference costs 600 uJ; the counter wraps at 1e6
        state["uj"] = (state["uj"] + 600) % 1000000
        counter.write_text(f"{state['uj']}\n")
    result = energy.measure_energy(run, min_seconds=0.0, min_runs=5, root=tmp_path)
    assert result["measurable"] and result["runs"] == 5
    assert result["mj_per_inference"] == pytest.approx(0.6)
    assert "intel-rapl:0" in result["method"] and "intel-rapl:0:0" not in result["method"]


def test_energy_not_measurable_says_why(tmp_path):
    result = energy.measure_energy(lambda: None, root=tmp_path)
    reason = f"no RAPL counters ({tmp_path}/intel-rapl:*/energy_uj does not exist)"
    assert result == {"measurable": False, "reason": reason}
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "energy_uj").mkdir()  # exists, unreadable as a number
    assert "not readable" in energy.measure_energy(lambda: None, root=tmp_path)["reason"]


def test_measure_latency_keeps_its_signature():
    sess = session(onnx.load(str(DIGITS)))
    feed = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    timings, ratios = measure_latency([sess, sess], feed, rounds=3, warmup=1)
    assert len(timings) == 2 and ratios[0] == 1.0 and timings[0].samples == 3


def test_run_bench_library_call(pruned):
    result = run_bench([DIGITS, pruned], rounds=2, warmup=0, memory=False, energy=False)
    schema.check(result)
    assert [m["path"] for m in result["models"]] == [str(DIGITS), str(pruned)]


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch, capsys):
    import io
    import logging
    import sys

    from onnxprune import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    items = [1, 2, 3]
    try:
        progress.configure(quiet=False, verbose=1)
        assert progress.bar(items, "x") is items  # pytest's stderr is not a terminal
        assert logging.getLogger("onnxprune.check.bench").getEffectiveLevel() == logging.INFO
        monkeypatch.setattr("sys.stderr", Terminal())
        shown = progress.bar(items, "benchmark")
        assert shown is not items and list(shown) == items and "benchmark" in sys.stderr.getvalue()
        progress.configure(quiet=True)
        assert progress.bar(items, "x") is items
        assert logging.getLogger("onnxprune").level == logging.ERROR
    finally:
        progress.configure(quiet=False, verbose=0)
