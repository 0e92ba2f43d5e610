"""graph/recurrence.py: a recurrent op, a weight unrolled over time steps, or neither."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES
from onnxprune.graph.recurrence import has_recurrence


def _steps(shared: bool) -> onnx.ModelProto:
    """Two Gemm steps h1 = x W1, h2 = h1 W2, with W2 the same tensor as W1 when `shared`."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W1")
    w2 = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W2")
    nodes = [helper.make_node("Gemm", ["x", "W1"], ["h1"]), helper.make_node("Gemm", ["h1", "W1" if shared else "W2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w] + ([] if shared else [w2]))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_recurrent_op_counts_and_a_transformer_does_not():
    assert has_recurrence(onnx.load(FIXTURES / "crnn_tiny.onnx"))      # LSTM
    assert has_recurrence(onnx.load(FIXTURES / "rnn_tiny.onnx"))       # LSTM and GRU
    assert not has_recurrence(onnx.load(FIXTURES / "transformer_tiny.onnx"))
    assert not has_recurrence(onnx.load(FIXTURES / "resnet_tiny.onnx"))


def test_one_weight_read_by_several_steps_is_an_unrolled_recurrence():
    assert has_recurrence(_steps(shared=True))
    assert not has_recurrence(_steps(shared=False))


def test_a_recurrent_op_inside_a_loop_body_counts():
    body = helper.make_graph([helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=2)], "body", [], [])
    loop = helper.make_node("Loop", ["n", "c"], ["out"], body=body)
    g = helper.make_graph([loop], "g", [], [])
    assert has_recurrence(helper.make_model(g))
