"""An output returned through an If (openWakeWord: If(p >= 0.5, verifier(x), p)): fisher probes both branches.

The autodiff has no rule for If, so no gradient reached any weight and fisher fell back to reconstruction
with a warning. score/branch_outputs.py inlines the branches as outputs of their own.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune import prune
from onnxprune.score.branch_outputs import branch_view

RNG = np.random.default_rng(11)
W = {k: (0.5 * RNG.standard_normal(s)).astype(np.float32)
     for k, s in {"w1": (6, 8), "w2": (8, 1), "v1": (6, 8), "v2": (8, 1)}.items()}


def _mlp(x: str, a: str, b: str, out: str, tag: str) -> list[onnx.NodeProto]:
    return [helper.make_node("Gemm", [x, a], [f"{tag}_h"]), helper.make_node("Relu", [f"{tag}_h"], [f"{tag}_r"]),
            helper.make_node("Gemm", [f"{tag}_r", b], [f"{tag}_z"]), helper.make_node("Sigmoid", [f"{tag}_z"], [out])]


def _gated_model() -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    then = helper.make_graph(_mlp("x", "v1", "v2", "q", "verifier"), "then", [],
                             [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 1])])
    other = helper.make_graph([helper.make_node("Identity", ["p"], ["p_out"])], "else", [],
                              [helper.make_tensor_value_info("p_out", TensorProto.FLOAT, [1, 1])])
    nodes = _mlp("x", "w1", "w2", "p", "main") + [
        helper.make_node("GreaterOrEqual", ["p", "half"], ["ge"]), helper.make_node("Squeeze", ["ge"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(v, k) for k, v in W.items()] + [numpy_helper.from_array(np.float32(0.5), "half")]
    graph = helper.make_graph(nodes, "gated", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])], [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _numpy_mlp(x, a, b):
    return 1 / (1 + np.exp(-(np.maximum(x @ W[a], 0) @ W[b])))


def test_view_returns_both_branches():
    model = _gated_model()
    view = branch_view(model)
    onnx.checker.check_model(view)
    assert [o.name for o in view.graph.output] == ["y/then/q", "y/else/p_out"]
    x = RNG.standard_normal((1, 6)).astype(np.float32)
    then, other = ort.InferenceSession(view.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(then, _numpy_mlp(x, "v1", "v2"), rtol=1e-5)
    np.testing.assert_allclose(other, _numpy_mlp(x, "w1", "w2"), rtol=1e-5)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.allclose(y, then) or np.allclose(y, other)
    assert branch_view(view) is None  # nothing left to inline


def test_fisher_back_propagates_through_an_output_if(caplog):
    calib = [{"x": RNG.standard_normal((1, 6)).astype(np.float32)} for _ in range(16)]
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = prune(_gated_model(), 0.25, calib=calib, criterion="fisher", scope="global", recover="none",
                       round_to=1, bench_rounds=0)
    assert "no output gradients" not in caplog.text
    onnx.checker.check_model(result.model)
