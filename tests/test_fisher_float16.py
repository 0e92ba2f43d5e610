"""fisher on a float16 model (as onnxconverter-common writes it, float32 at the interface): the ReLU
rule's mask is cast to the gradient's type, float16, not float32 (ONNX Runtime refused the gradient
graph, and the default criterion silently fell back to reconstruction)."""

from __future__ import annotations

import logging

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import onnxprune


def _half_mlp():
    """x float32 (1, 8) -> Cast float16 -> MatMul 16 -> Relu -> MatMul 4 -> Cast float32."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float16), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float16), "w2")]
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16), helper.make_node("MatMul", ["xh", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["b"]),
             helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fisher_gets_gradients_through_a_float16_relu(caplog):
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 8)).astype(np.float32)} for _ in range(16)]
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = onnxprune.prune(_half_mlp(), calib=feeds, ratio=0.5, round_to=1, criterion="fisher", bench_rounds=0)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "no output gradients" not in said, said
    assert result.plan.summary()["removed"] == 8
