"""fisher_bernoulli's view: each squashed Sigmoid output replaced by f(z) = 2 atan(tanh(z/4)), whose slope is
sqrt(p (1 - p)), so a back-propagated probe weighs a logit's damage by a Bernoulli output's Fisher information."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.score.logit_outputs import bernoulli_view


def _head(rng) -> "onnx.ModelProto":
    inits = [numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array((3 * rng.standard_normal((16, 4))).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_the_view_has_the_bernoulli_slope():
    rng = np.random.default_rng(0)
    model, view = _head(rng), None
    view = bernoulli_view(model)
    assert view is not None and "Sigmoid" not in {n.op_type for n in view.graph.node}
    x = rng.standard_normal((5, 6)).astype(np.float32)
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    z = np.maximum(x @ w["w1"], 0) @ w["w2"]
    p = 1 / (1 + np.exp(-z))
    eps = 1e-2  # the view's slope at z, by central differences on the logit, equals sqrt(p (1 - p))
    f = lambda t: 2 * np.arctan(np.tanh(t / 4))  # noqa: E731
    np.testing.assert_allclose(_run(view, x), f(z), atol=1e-5)
    np.testing.assert_allclose((f(z + eps) - f(z - eps)) / (2 * eps), np.sqrt(p * (1 - p)), rtol=1e-3, atol=1e-6)
    assert bernoulli_view(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))) is None


def test_prune_with_fisher_bernoulli(caplog):
    rng = np.random.default_rng(1)
    model = _head(rng)
    calib = {"x": rng.standard_normal((16, 1, 6)).astype(np.float32)}
    feeds = [{"x": calib["x"][i]} for i in range(16)]
    result = onnxprune.prune(model, calib=feeds, ratio=0.5, criterion="fisher_bernoulli", bench_rounds=0)
    w1 = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}["w1"]
    assert w1.shape == (6, 8) and result.report["options"]["criterion"] == "fisher_bernoulli"
    assert np.isfinite(_run(result.model, calib["x"][0])).all()
    assert "no output gradients" not in caplog.text  # fisher ran through the view (Atan has a rule)
