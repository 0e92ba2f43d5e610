"""The detect loss's score options (autodiff/detect_loss.py: DetectSpec.score_weight and .focus, the score rows'
confident-anchor term) on test_detect_distill's YOLO-style toy head: the defaults leave the loss as it was, the
confident-anchor term starts at 1, the loss and gradient match float64 numpy and finite differences, the
term moves the gradient to the anchors the teacher fires on, and a head without score rows ignores it."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.autodiff.detect_loss import anchor_weights, focus_term, numpy_detect_loss
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.errors import BadInputError
from onnxprune.recover.detect_distill import spec_from_outputs

from test_detect_distill import STUDENT, TEACHER, X, assert_loss_and_gradient, outputs

S_OUT, T_OUT = outputs(STUDENT), outputs(TEACHER)


def test_the_defaults_give_the_old_loss_and_the_focus_term_starts_at_one():
    plain = spec_from_outputs(S_OUT[:64], T_OUT[:64])
    focused = spec_from_outputs(S_OUT[:64], T_OUT[:64], focus=1.0)
    assert plain.score_weight == 1.0 and plain.focus == 0.0
    assert numpy_detect_loss(S_OUT[:64], T_OUT[:64], plain) == pytest.approx(2.0, rel=1e-6)
    assert numpy_detect_loss(S_OUT[:64], T_OUT[:64], focused) == pytest.approx(3.0, rel=1e-6)  # boxes, scores, focus
    weighted = spec_from_outputs(S_OUT[:64], T_OUT[:64], score_weight=4.0, focus=2.0)
    assert numpy_detect_loss(S_OUT[:64], T_OUT[:64], weighted) == pytest.approx(1.0 + 4.0 + 2.0, rel=1e-6)


def test_the_focus_term_is_zero_at_the_target_and_weighs_confident_anchors():
    spec = spec_from_outputs(S_OUT[:64], T_OUT[:64], focus=1.0)
    assert focus_term(T_OUT[:64], T_OUT[:64], spec) == pytest.approx(0.0, abs=1e-12)
    w = anchor_weights(T_OUT[:64], spec)[:, 0, :]
    confident, background = np.unravel_index(np.argmax(w), w.shape), np.unravel_index(np.argmin(w), w.shape)
    wrong_at = {}
    for name, (n, a) in (("confident", confident), ("background", background)):
        y = T_OUT[:64].copy()
        y[n, 2:, a] = 0.5  # the same score error at one anchor
        wrong_at[name] = focus_term(y, T_OUT[:64], spec)
    assert wrong_at["confident"] > 20 * wrong_at["background"], wrong_at


@pytest.mark.parametrize("score_weight,focus", [(3.0, 0.0), (1.0, 2.0), (0.5, 1.5)])
def test_loss_matches_numpy_and_the_gradient_matches_float64_finite_differences(score_weight, focus):
    teacher_out = T_OUT[:16]
    spec = spec_from_outputs(S_OUT[:64], T_OUT[:64], score_weight, focus)
    assert_loss_and_gradient(spec, teacher_out)


def _score_gradient(spec) -> np.ndarray:
    """d loss / d student scores at the student's outputs, by float64 forward differences."""
    y, t = S_OUT[:16].astype(np.float64), T_OUT[:16]
    base = numpy_detect_loss(y, t, spec)
    g = np.zeros_like(y)
    for idx in np.ndindex(*y.shape):
        if idx[1] >= 2:  # the score rows
            moved = y.copy()
            moved[idx] += 1e-7
            g[idx] = (numpy_detect_loss(moved, t, spec) - base) / 1e-7
    return g


def test_the_focus_term_moves_the_score_gradient_to_confident_anchors():
    w = anchor_weights(T_OUT[:16], spec_from_outputs(S_OUT[:64], T_OUT[:64]))[:, 0, :]
    confident = w > 0.5
    assert confident.any() and (~confident).any()

    def share(spec) -> float:
        g = np.abs(_score_gradient(spec)[:, 2:, :]).sum(axis=1)
        return float(g[confident].sum() / g.sum())
    before = share(spec_from_outputs(S_OUT[:64], T_OUT[:64]))
    after = share(spec_from_outputs(S_OUT[:64], T_OUT[:64], focus=4.0))
    assert after > before + 0.05, (before, after)


def test_a_head_without_score_rows_ignores_the_score_options():
    spec = spec_from_outputs(S_OUT[:64], T_OUT[:64], score_weight=5.0, focus=3.0)
    spec.score[:] = False
    plain = spec_from_outputs(S_OUT[:64], T_OUT[:64])
    plain.score[:] = False
    assert spec.focus_coef() == 0.0 and spec.score_coef() == 0.0
    assert numpy_detect_loss(S_OUT[:16], T_OUT[:16], spec) == pytest.approx(numpy_detect_loss(S_OUT[:16], T_OUT[:16], plain))
    check = check_gradients(STUDENT, {"x": X[:16]}, loss="distill", target=T_OUT[:16], distill="detect", balance=spec)
    assert check.errors and check.worst < 1e-3, check.errors


@pytest.mark.parametrize("bad", [{"score_weight": -1.0}, {"focus": float("nan")}])
def test_a_negative_or_nan_weight_is_refused(bad):
    with pytest.raises(BadInputError, match="score weight and focus"):
        spec_from_outputs(S_OUT[:64], T_OUT[:64], **bad)
