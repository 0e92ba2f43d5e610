"""Copy-free forms of Conv's weight gradient (issue 10, speed, wave 7): one GEMM over channel-major
stacked slices whose result is the filter as it is (few output positions, many output channels),
strided Convs sliced through their stride phases, and sub-pixel tap filters filled from views.
Gradients against float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.autodiff import build_training_graph
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.nchwc import FedFilter, source_filter
from onnxprune.autodiff.rules import conv
from test_autodiff_fast_conv import GROUP_ONE
from test_autodiff_rules import CONV, TOLERANCE, model, node, r


@pytest.mark.parametrize("case", GROUP_ONE)
def test_interleaved_weight_gradient(case, monkeypatch):
    monkeypatch.setattr(conv, "WEIGHT_GRAD_FORM", "interleaved")
    result = check_gradients(model(*CONV[case]), coords=8)
    assert result.worst < TOLERANCE, result.errors


def test_few_positions_and_many_channels_take_one_gemm():
    """A 4x4-stage-like Conv (2x2 output per image, 128 channels): one GEMM, no Concat of per-tap
    results, no Transpose of the filter; exact gradients."""
    m = model([node("Conv", ["x", "w", "b"], pads=[1, 1, 1, 1])],
              {"x": r(2, 128, 2, 2), "w": r(128, 128, 3, 3) * 0.03, "b": r(128)})
    tg = build_training_graph(m, loss="mse", trainable=["w", "b"])
    ops = [n.op_type for n in tg.model.graph.node]
    assert ops.count("Gemm") == 1 and ops.count("Transpose") == 2  # x and dY to channel-first only
    result = check_gradients(m, coords=12)
    assert result.worst < TOLERANCE, result.errors


@pytest.mark.parametrize("form", ["channel_first", "stacked", "interleaved"])
def test_strided_taps_slice_their_phase(form, monkeypatch):
    """A 3x3/2 Conv's nine taps read four stride phases of x (one strided Slice each) through
    stride-1 Slices; 5x5/(2, 3) with dilation 1 and asymmetric pads too."""
    monkeypatch.setattr(conv, "WEIGHT_GRAD_FORM", form)
    for attrs, shapes, phases in [(dict(strides=[2, 2], pads=[1, 1, 1, 1]), ((2, 3, 9, 9), (4, 3, 3, 3)), 4),
                                  (dict(strides=[2, 3], pads=[2, 1, 0, 2]), ((2, 2, 11, 12), (3, 2, 5, 5)), 6)]:
        m = model([node("Conv", ["x", "w"], **attrs)], {"x": r(*shapes[0]), "w": r(*shapes[1])})
        tg = build_training_graph(m, loss="mse", trainable=["w"])
        strided = [n for n in tg.model.graph.node if n.op_type == "Slice" and len(n.input) == 5]
        assert len(strided) == phases
        result = check_gradients(m, coords=12)
        assert result.worst < TOLERANCE, result.errors


@pytest.mark.parametrize("taps", [((1,), (2, 0)), ((3, 1), (4, 2, 0)), ((2, 0), (0,)), ((0, 2), (2, 1, 0)),
                                  ((2, 0, 1), (1,))])
def test_tap_filters_from_views_match_gathered_taps(taps):
    w = r(4, 3, 5, 5)
    spec = FedFilter("w", "plain", False, (3, 4, len(taps[0]), len(taps[1])), taps)
    want = w[:, :, list(taps[0])][:, :, :, list(taps[1])].transpose(1, 0, 2, 3)
    np.testing.assert_array_equal(source_filter(spec, w), want)


@pytest.mark.parametrize("attrs, shapes, transposed", [
    (dict(strides=[2, 2]), ((2, 3, 6, 6), (4, 3, 1, 1)), True),  # 1x1/2: one tap per phase
    (dict(strides=[2, 2], pads=[1, 1, 1, 1]), ((1, 2, 28, 28), (3, 2, 3, 3)), True),  # dY 14x14: wide enough
    (dict(strides=[2, 2], pads=[1, 1, 1, 1]), ((2, 2, 13, 13), (3, 2, 3, 3)), False),  # dY 7x7: phases
])
def test_strided_input_gradient_form_by_width(attrs, shapes, transposed):
    """ConvTranspose for 1x1 strided kernels and dY of 14x14 or more, sub-pixel phases below."""
    m = model([node("Conv", ["x", "w"], ["c"], **attrs), node("Tanh", ["c"])], {"x": r(*shapes[0]), "w": r(*shapes[1])})
    ops = [n.op_type for n in build_training_graph(m, loss="mse").model.graph.node]
    assert ("ConvTranspose" in ops) == transposed and ("DepthToSpace" in ops) != transposed
    result = check_gradients(m, coords=12)
    assert result.worst < TOLERANCE, result.errors
