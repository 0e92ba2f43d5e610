"""A MACs target on a model whose whole network sits in If branches (the packaged silero VAD export):
the analysis counts no MACs there, so no fraction of them can be kept. Bad input, exit 2 with one line,
not a ZeroDivisionError in the ratio search."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.cli.main import main


def _branched_model():
    """x (1, 4) -> If(use): then MatMul(x, w) (w an outer initializer), else MatMul(x, 2w)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(2 * w, "w2")]
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8])  # noqa: E731
    then = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"])], "then", [], [out("t")])
    other = helper.make_graph([helper.make_node("MatMul", ["x", "w2"], ["e"])], "else", [], [out("e")])
    graph = helper.make_graph([helper.make_node("If", ["use"], ["y"], then_branch=then, else_branch=other)], "branched",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("use", TensorProto.BOOL, [1])], [out("y")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_macs_target_with_nothing_counted_is_bad_input(tmp_path, capsys):
    path, calib = tmp_path / "m.onnx", tmp_path / "c.npz"
    path.write_bytes(_branched_model().SerializeToString())
    rng = np.random.default_rng(1)
    np.savez(calib, x=rng.standard_normal((8, 1, 4)).astype(np.float32), use=np.ones((8, 1), bool))
    code = main(["prune", str(path), "-o", str(tmp_path / "out.onnx"), "--target-macs", "0.5", "--calib", str(calib)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1 and "--target-macs" in err[0] and "no MACs" in err[0]
    assert not (tmp_path / "out.onnx").exists()
