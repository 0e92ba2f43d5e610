"""Straight-through gradients across activation QuantizeLinear -> DequantizeLinear (autodiff/rules/quantize.py).

In x -> Conv(W1) -> Q -> DQ -> Conv(W2) -> y, the gradient reaching W1 passes the pair unchanged, so it
equals the gradient of the same model without the pair (Conv is linear: dy/dh does not depend on h).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.probe import build_probe_graph

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
W2 = RNG.standard_normal((3, 4, 1, 1)).astype(np.float32)


def _model(qdq: bool) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2"),
             numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1])]
    if qdq:
        nodes += [helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"]),
                  helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["hd"])]
    nodes.append(helper.make_node("Conv", ["hd" if qdq else "h", "w2"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _gradient(model: onnx.ModelProto) -> np.ndarray:
    pg = build_probe_graph(model, ["w1"], input_shapes={"x": (2, 2, 5, 5)})
    assert "w1" in pg.grads and not pg.frozen
    feeds = {"x": RNG.standard_normal((2, 2, 5, 5)).astype(np.float32) * 0.1}
    feeds.update({p: np.ones((2, 3, 5, 5), np.float32) for p in pg.probes.values()})
    sess = ort.InferenceSession(pg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([pg.grads["w1"]], feeds)[0]


def test_gradient_passes_activation_qdq_straight_through():
    state = RNG.bit_generator.state
    with_qdq = _gradient(_model(qdq=True))
    RNG.bit_generator.state = state  # the same inputs for both
    without = _gradient(_model(qdq=False))
    assert np.abs(with_qdq).max() > 0
    assert np.allclose(with_qdq, without, rtol=1e-4, atol=1e-5)
