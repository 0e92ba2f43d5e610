"""A branch's own constants are no inputs of a streamed segment: the statistics pass over a model whose
If branch makes a Constant (as the PyTorch exports of VAD models do in their decoder) ran into a
KeyError looking for that constant among the stored activations."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.score.stream import reads


def _branch_model():
    """x (1, 4) -> MatMul 16 -> Relu -> MatMul 8 -> If(use): then b * Constant 2, else b -> MatMul 16 -> Relu
    -> MatMul 3: the second pair's statistics are gathered after the If."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w3"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w4")]
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8])  # noqa: E731
    then = helper.make_graph([helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(
        np.array([2.0], np.float32))), helper.make_node("Mul", ["b", "two"], ["t"])], "then", [], [out("t")])
    other = helper.make_graph([helper.make_node("Identity", ["b"], ["e"])], "else", [], [out("e")])
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["b"]),
             helper.make_node("If", ["use"], ["c"], then_branch=then, else_branch=other),
             helper.make_node("MatMul", ["c", "w3"], ["d"]), helper.make_node("Relu", ["d"], ["g"]),
             helper.make_node("MatMul", ["g", "w4"], ["y"])]
    graph = helper.make_graph(nodes, "branch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                                                helper.make_tensor_value_info("use", TensorProto.BOOL, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_reads_names_what_a_branch_reads_from_outside_only():
    if_node = next(n for n in _branch_model().graph.node if n.op_type == "If")
    assert reads(if_node) == {"use", "b"}


def test_prune_with_calibration_streams_through_the_branch():
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32), "use": np.array([True])} for _ in range(16)]
    result = onnxprune.prune(_branch_model(), calib=feeds, ratio=0.5, round_to=1, bench_rounds=0)
    assert result.plan.summary()["removed"] == 16
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, feeds[0])[0]).all()
