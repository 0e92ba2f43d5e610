"""A model whose dense run fails on synthetic inputs (a scalar input that must hold one value, as a
VAD's sample rate does) pruned without data: exit 2 with one line saying the dense model fails on the
inputs, not "internal error" from the latency rounds that ran first."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main


def _rate_model():
    """x (1, 4) -> MatMul 16 -> Relu -> MatMul 16 -> Reshape to (rate // 16000, 16): runs only at rates 16000..31999."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(16000, np.int64), "k"),
             numpy_helper.from_array(np.array([16], np.int64), "width"),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["b"]), helper.make_node("Div", ["rate", "k"], ["w"]),
             helper.make_node("Unsqueeze", ["w", "axes"], ["w1d"]),
             helper.make_node("Concat", ["w1d", "width"], ["shape"], axis=0),
             helper.make_node("Reshape", ["b", "shape"], ["y"], allowzero=1)]
    graph = helper.make_graph(nodes, "rate", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                              helper.make_tensor_value_info("rate", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_data_free_prune_of_a_model_failing_on_synthetic_inputs_is_bad_input(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    path.write_bytes(_rate_model().SerializeToString())
    code = main(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and "dense model fails" in err[0] and "internal error" not in err[0]
    assert not (tmp_path / "out.onnx").exists()


def test_latency_target_times_the_calibration_sample(tmp_path, capsys):
    """The latency search timed a synthetic sample even with --calib given; a model that runs only on
    its real inputs (the rate) crashed there (exit 3)."""
    path, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    path.write_bytes(_rate_model().SerializeToString())
    rng = np.random.default_rng(1)
    np.savez(calib, x=rng.standard_normal((8, 1, 4)).astype(np.float32), rate=np.full((8,), 16000, np.int64))
    code = main(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--target-latency", "0.9", "--calib", str(calib),
                 "--bench-rounds", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (tmp_path / "out.onnx").exists()
