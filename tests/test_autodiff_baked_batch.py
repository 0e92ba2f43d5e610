"""A model that cannot run at the analysis batch of 2 (a view with batch 1 baked in, as khmersm's dynamo
export has) is analysed at the input shapes the caller gave: before, every tensor after the view had an
unknown shape and the probe graph failed ("the shape of tensor 'linear_1' is unknown; pass input_shapes")."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.probe import build_probe_graph

RNG = np.random.default_rng(5)


def _baked_view_model(w1, w2, bias):
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Abs", ["view"], ["shape"]),  # a shape only known at run time: (1, 2, 2)
             helper.make_node("Reshape", ["a", "shape"], ["b"]),  # batch 1 baked in: fails at batch 2
             helper.make_node("MatMul", ["b", "w2"], ["c"]),
             helper.make_node("Add", ["c", "bias"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(bias, "bias"),
             numpy_helper.from_array(np.asarray([1, 2, 2], np.int64), "view")]
    graph = helper.make_graph(nodes, "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_probe_graph_of_a_model_with_a_baked_batch():
    w1, w2, bias = (RNG.standard_normal(s).astype(np.float32) for s in ((4, 4), (2, 3), (3,)))
    x, v = RNG.standard_normal((1, 4)).astype(np.float32), RNG.standard_normal((1, 2, 3)).astype(np.float32)
    pg = build_probe_graph(_baked_view_model(w1, w2, bias), ["w1", "w2", "bias"], input_shapes={"x": x.shape})
    assert set(pg.grads) == {"w1", "w2", "bias"}
    sess = ort.InferenceSession(pg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    g1, g2, gb = sess.run([pg.grads[k] for k in ("w1", "w2", "bias")], {"x": x, pg.probes["y"]: v})
    b = (x @ w1).reshape(1, 2, 2)  # L = <b w2 + bias, v>
    np.testing.assert_allclose(g2, np.einsum("nti,nto->io", b, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, v.sum((0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g1, x.T @ (v @ w2.T).reshape(1, 4), rtol=1e-5, atol=1e-5)
