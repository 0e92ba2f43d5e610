"""Faster training-step forms for ResNet-like networks (issue 10, speed): the stacked-tap weight
gradient, DepthToSpace interleaving of sub-pixel input gradients, numpy-made filters fed to generic
Convs, and AdamW over cache-sized chunks. Gradients against float64 finite differences; the fed
filters and the chunked optimizer against the plain graph and the whole-buffer update."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune.autodiff import build_training_graph, read_weights
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.nchwc import block_size, lower_convs_fed
from onnxprune.autodiff.optim import AdamW, FlatParams
from onnxprune.autodiff.rules import conv
from onnxprune.autodiff.runner import TrainStep
from test_autodiff_fast_conv import GROUP_ONE
from test_autodiff_rules import CONV, TOLERANCE, model, node, r


@pytest.mark.parametrize("case", GROUP_ONE)
def test_stacked_weight_gradient(case, monkeypatch):
    monkeypatch.setattr(conv, "WEIGHT_GRAD_FORM", "stacked")
    result = check_gradients(model(*CONV[case]), coords=8)
    assert result.worst < TOLERANCE, result.errors


def test_few_input_channels_take_one_gemm():
    """A stem-like Conv (3 channels, 7x7/2, rows of 14): every tap in one GEMM, and exact gradients."""
    m = model([node("Conv", ["x", "w", "b"], strides=[2, 2], pads=[3, 3, 3, 3])],
              {"x": r(2, 3, 28, 28), "w": r(8, 3, 7, 7) * 0.1, "b": r(8)})
    ops = [n.op_type for n in build_training_graph(m, loss="mse").model.graph.node]
    assert ops.count("Gemm") == 1
    result = check_gradients(m, coords=12)
    assert result.worst < TOLERANCE, result.errors


def test_square_strides_interleave_with_depth_to_space():
    m = model([node("Conv", ["x", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]), node("Tanh", ["c"])],
              {"x": r(2, 3, 7, 7), "w": r(4, 3, 3, 3)})  # x trained too: its sub-pixel input gradient is built
    assert "DepthToSpace" in [n.op_type for n in build_training_graph(m, loss="mse").model.graph.node]
    result = check_gradients(m, coords=12)
    assert result.worst < TOLERANCE, result.errors


def _block_net(size: int) -> onnx.ModelProto:
    """input -> Conv 16->16 3x3 -> Relu -> Conv 3x3/2 -> Relu -> Conv 3x3 -> Tanh: the last two
    need input gradients (sub-pixel phases, flipped filter)."""
    nodes = [node("Conv", ["input", "w0"], ["c0"], pads=[1, 1, 1, 1]), node("Relu", ["c0"], ["a0"]),
             node("Conv", ["a0", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["a1"]),
             node("Conv", ["a1", "w2"], ["c2"], pads=[1, 1, 1, 1]), node("Tanh", ["c2"])]
    m = model(nodes, {"w0": r(16, 16, 3, 3) * 0.2, "w1": r(16, 16, 3, 3) * 0.2, "b1": r(16),
                      "w2": r(16, 16, 3, 3) * 0.2})
    m.graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 16, size, size]))
    return m


@pytest.mark.skipif(block_size() <= 1, reason="this CPU/ORT build has no NCHWc kernels")
@pytest.mark.parametrize("size", [6, 24])
def test_fed_filters_match_the_plain_graph(size):
    """Input-gradient Convs read their flipped and sub-pixel tap filters from numpy-filled inputs,
    on the generic kernel (few positions: 6x6) and on NCHWc (24x24); loss and gradients as the
    graph computes them itself."""
    import onnxruntime as ort
    m = _block_net(size)
    tg = build_training_graph(m, loss="mse")
    lowered, derived = lower_convs_fed(tg.model, 2, tg.trainable)
    assert any(spec.taps for spec in derived.values()) and any(spec.flipped for spec in derived.values())
    plans = {spec.plan for spec in derived.values()}
    assert plans == {"plain"} if size == 6 else "blocked" in plans
    assert not any(n.op_type in ("Gather", "Slice", "Transpose") and n.input[0] in tg.trainable
                   for n in lowered.graph.node)
    params = FlatParams(read_weights(m, tg.trainable))
    x = r(2, 16, size, size)
    target = r(2, 16, (size + 1) // 2, (size + 1) // 2)
    loss, _ = TrainStep(tg, params, threads=1)({"input": x}, target)
    sess = ort.InferenceSession(tg.model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run([tg.loss] + [tg.grads[n] for n in params.names],
                    {"input": x, tg.target: target, **params.values})
    assert loss == pytest.approx(float(want[0]), rel=1e-5)
    for name, w in zip(params.names, want[1:]):
        np.testing.assert_allclose(params.grads[name], w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()))


def _reference_adamw(w, grads, lr, decay_mask, b1=0.9, b2=0.999, eps=1e-8, wd=0.01):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * wd * decay_mask * w
        w = w - lr / (1 - b1 ** t) * m / (np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps)
    return w


def test_chunked_adamw_matches_the_whole_buffer_update(monkeypatch):
    monkeypatch.setattr(AdamW, "CHUNK", 4)  # 11 weights: chunks of 4, 4 and 3
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((2, 4)).astype(np.float32), "b": rng.standard_normal(3).astype(np.float32)}
    p = FlatParams(weights)
    start = p.data.astype(np.float64).copy()
    opt = AdamW(p, weight_decay=0.01)
    grads = [rng.standard_normal(11) for _ in range(5)]
    for g in grads:
        p.grad[:] = g
        opt.step(0.01)
    want = _reference_adamw(start, grads, 0.01, p.decay.astype(np.float64))
    np.testing.assert_allclose(p.data, want, rtol=2e-6, atol=1e-7)
