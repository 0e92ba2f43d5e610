"""tools/bench_tasks.py without real models: config parsing, cells, and a failing run that costs one cell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bench_tasks  # noqa: E402


def test_parse_configs_presets_and_json_with_commas():
    got = bench_tasks.parse_configs('l2,mine={"criterion": "activation", "scope": "local"},recon')
    assert list(got) == ["l2", "mine", "recon"]
    assert got["l2"] == {"criterion": "l2", "scope": "local", "recover": "none"}
    assert got["mine"] == {"criterion": "activation", "scope": "local"}
    assert got["recon"]["criterion"] == "reconstruction"
    with pytest.raises(SystemExit, match="unknown config"):
        bench_tasks.parse_configs("nope")


def test_cells_show_score_delta_macs_latency_or_the_error():
    ok = {"score": 97.5, "macs": 0.801, "latency": 0.84}
    assert bench_tasks.fmt_cell(ok, 99.0, True) == "97.5 (-1.5) · 0.80 · 0.84x"
    assert bench_tasks.fmt_cell({"error": "a | b"}, 99.0, True) == "error: a / b"


def test_a_failing_run_becomes_an_error_cell(tmp_path):
    spec = {"model": "no_such_model", "dense": "", "calib": "", "eval": str(tmp_path / "missing.pkl"),
            "level": 0.9, "kwargs": {}, "rounds": 0, "tag": "bad"}
    res = bench_tasks.run_one(spec, tmp_path, mem_gb=4, timeout=120)
    assert set(res) == {"error"} and res["error"]


def test_an_out_of_memory_run_says_so(tmp_path):
    spec = {"model": "ppocr_cls", "dense": "", "calib": "", "eval": "", "level": 0.9, "kwargs": {},
            "rounds": 0, "tag": "oom"}
    res = bench_tasks.run_one(spec, tmp_path, mem_gb=0.05, timeout=120)  # 50 MB: not even numpy loads
    assert res["error"].startswith("out of memory") or "memory" in res["error"].lower(), res


def test_merge_rows_later_cells_win():
    a = {"model": "m", "config": "c", "dense": 1.0, "levels": {"0.9": {"score": 1}, "0.8": {"score": 2}}}
    b = {"model": "m", "config": "c", "dense": 1.0, "levels": {"0.8": {"score": 3}}}
    other = {"model": "n", "config": "c", "dense": 1.0, "levels": {}}
    got = bench_tasks.merge_rows([a, other, b])
    assert [r["model"] for r in got] == ["m", "n"]
    assert got[0]["levels"] == {"0.9": {"score": 1}, "0.8": {"score": 3}}


def test_output_error_is_the_mean_relative_error_of_the_float_outputs(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    def model(scale: float, path):  # y = x * scale, plus an integer output the error skips
        g = helper.make_graph(
            [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("Cast", ["x"], ["k"], to=TensorProto.INT64)],
            "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3]),
             helper.make_tensor_value_info("k", TensorProto.INT64, [None, 3])],
            [helper.make_tensor("s", TensorProto.FLOAT, [], [scale])])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return str(path)

    dense, pruned = model(1.0, tmp_path / "d.onnx"), model(1.1, tmp_path / "p.onnx")
    feeds = [{"x": np.ones((2, 3), np.float32)}, {"x": np.full((1, 3), 5.0, np.float32)}]
    assert bench_tasks.output_error(dense, pruned, feeds) == pytest.approx(0.1, rel=1e-5)
    assert bench_tasks.output_error(dense, dense, feeds) == 0.0
