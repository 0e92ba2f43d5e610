"""QuantizeLinear -> DequantizeLinear (a QDQ model's quantized activation): the straight-through gradient.

A tiny QDQ model, as a QDQ export looks after its weights are lifted to floats (load/qdq_lift.py):
x -> Conv(w1) -> QuantizeLinear -> DequantizeLinear -> Conv(w2) -> y, probed with L = <y, v>
(autodiff/probe.py). Checked against the exact definition (round() passes the gradient, the clamp
stops it) and against float64 finite differences where no rounding step is crossed.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.autodiff.probe import build_probe_graph

RNG = np.random.default_rng(7)
CASES = {  # (quantized type, scale, zero point, axis): per tensor, and per channel with uint8 zero points
    "int8_per_tensor": (TensorProto.INT8, np.float32(0.02), np.int8(3), None),
    "uint8_per_channel": (TensorProto.UINT8, np.asarray([0.01, 0.02, 0.015, 0.03], np.float32),
                          np.asarray([128, 100, 140, 128], np.uint8), 1),
}


def _model(qtype, scale, zero, axis, w1, w2):
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("QuantizeLinear", ["a", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], **attrs),
             helper.make_node("Conv", ["d", "w2"], ["y"])]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in
             {"w1": w1, "w2": w2, "s": scale, "z": zero}.items()]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _forward(x, w1, w2, scale, zero, qmin, qmax, rounding=True):
    """float64 reference: a = conv1 x, q = clamp(round(a/s) + z), d = (q - z) s, y = conv2 d (1x1 convs);
    without `rounding`, the surrogate whose derivative the straight-through estimator is."""
    s = np.reshape(scale, (1, -1, 1, 1)).astype(np.float64)
    z = np.reshape(zero, (1, -1, 1, 1)).astype(np.float64)
    a = np.einsum("bihw,oi->bohw", x, w1[:, :, 0, 0])
    level = np.round(a / s) if rounding else a / s
    q = np.clip(level + z, qmin, qmax)
    d = (q - z) * s
    return a, q, d, np.einsum("bihw,oi->bohw", d, w2[:, :, 0, 0])


def _probe_grads(model, x, v):
    pg = build_probe_graph(model, ["w1", "w2"])
    assert set(pg.grads) == {"w1", "w2"} and not pg.frozen
    sess = ort.InferenceSession(pg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    g1, g2 = sess.run([pg.grads["w1"], pg.grads["w2"]], {"x": x, pg.probes["y"]: v})
    return g1.astype(np.float64), g2.astype(np.float64)


@pytest.mark.parametrize("case", sorted(CASES))
def test_pair_is_straight_through(case):
    qtype, scale, zero, axis = CASES[case]
    qmin, qmax = (-128, 127) if qtype == TensorProto.INT8 else (0, 255)
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    w1 = RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w2 = RNG.standard_normal((2, 4, 1, 1)).astype(np.float32)
    v = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    g1, g2 = _probe_grads(_model(qtype, scale, zero, axis, w1, w2), x, v)

    a, q, d, _ = _forward(x.astype(np.float64), w1, w2, scale, zero, qmin, qmax)
    s = np.reshape(scale, (1, -1, 1, 1))
    z = np.reshape(zero, (1, -1, 1, 1)).astype(np.float64)
    inside = (np.round(a / s) + z >= qmin) & (np.round(a / s) + z <= qmax)
    assert inside.any() and not inside.all()  # the case exercises both the identity and the clamp
    dd = np.einsum("bohw,oi->bihw", v.astype(np.float64), w2[:, :, 0, 0])  # dL/dd
    want1 = np.einsum("bchw,bihw->ci", dd * inside, x)[:, :, None, None]
    want2 = np.einsum("bohw,bihw->oi", v, d)[:, :, None, None]
    np.testing.assert_allclose(g2, want2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g1, want1, rtol=1e-4, atol=1e-4)


def test_pair_matches_finite_differences_away_from_rounding_steps():
    """w2 lies after the pair: the quantized model itself is smooth in it. w1 lies before it: the estimator is
    the derivative of the model with round() taken out (the clamp kept), by float64 central differences."""
    qtype, scale, zero, axis = CASES["int8_per_tensor"]
    x = RNG.standard_normal((2, 3, 5, 5))
    w1 = RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w2 = RNG.standard_normal((2, 4, 1, 1)).astype(np.float32)
    v = RNG.standard_normal((2, 2, 5, 5))
    g1, g2 = _probe_grads(_model(qtype, scale, zero, axis, w1, w2), x.astype(np.float32), v.astype(np.float32))

    def loss(a1, a2, rounding):
        return float((_forward(x, a1, a2, scale, zero, -128, 127, rounding)[3] * v).sum())

    for got, which, rounding in ((g2, 1, True), (g1, 0, False)):
        base = [w1.astype(np.float64), w2.astype(np.float64)]
        fd = np.zeros(base[which].shape)
        for i in range(fd.size):
            h = 1e-6
            plus, minus = [b.copy() for b in base], [b.copy() for b in base]
            plus[which].flat[i] += h
            minus[which].flat[i] -= h
            fd.flat[i] = (loss(*plus, rounding) - loss(*minus, rounding)) / (2 * h)
        np.testing.assert_allclose(got, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_saturated_activation_passes_no_gradient():
    """Every activation far outside the int8 range: the clamp stops all of w1's gradient, w2's stays."""
    qtype, _, zero, axis = CASES["int8_per_tensor"]
    w1 = np.full((4, 3, 1, 1), 50.0, np.float32)
    w2 = RNG.standard_normal((2, 4, 1, 1)).astype(np.float32)
    x = np.abs(RNG.standard_normal((2, 3, 5, 5))).astype(np.float32) + 1.0
    g1, g2 = _probe_grads(_model(qtype, np.float32(0.01), zero, axis, w1, w2), x,
                          RNG.standard_normal((2, 2, 5, 5)).astype(np.float32))
    assert np.all(g1 == 0.0) and np.abs(g2).max() > 0
