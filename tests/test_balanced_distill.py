"""Balanced distillation (recover/distill_weights.py): a squared error weighted per channel by one over the teacher's
variance. Its channel axis and weights, its loss against float64 numpy, its gradient against float64 finite
differences, and a toy whose output holds a large-scale and a small-scale channel: the small one improves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.gradcheck import check_gradients
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.weights import read_weights
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.distill_weights import BALANCE_SPREAD, balance_weights, channel_axis, spread, unbalanced
from onnxprune.recover.finetune import finetune

# a detector's head in small: two channels in "pixels", three scores
SCALE = np.asarray([300.0, 200.0, 0.01, 0.02, 0.01], dtype=np.float32)
C = len(SCALE)


def toy(hidden: np.ndarray, head: np.ndarray, rank3: bool = False) -> onnx.ModelProto:
    """x (N, 4) -> relu(x W1) W2 * SCALE: output channels of very different scale sharing W1; rank3 adds
    a trailing axis of 3 "anchors" (N, C, 3), the detector layout."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]), helper.make_node("Mul", ["z", "scale"], ["y2"])]
    inits = [numpy_helper.from_array(hidden.astype(np.float32), "w1"),
             numpy_helper.from_array(head.astype(np.float32), "w2"), numpy_helper.from_array(SCALE, "scale")]
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", C, 3] if rank3 else ["N", C])
    if rank3:
        nodes.append(helper.make_node("Unsqueeze", ["y2", "axes"], ["u"]))
        nodes.append(helper.make_node("Mul", ["u", "anchors"], ["y"]))
        inits += [numpy_helper.from_array(np.asarray([2], dtype=np.int64), "axes"),
                  numpy_helper.from_array(np.asarray([1.0, 0.5, 2.0], dtype=np.float32), "anchors")]
    else:
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                              [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


RNG = np.random.default_rng(0)
W1, W2 = RNG.standard_normal((4, 8)), RNG.standard_normal((8, C))
X = RNG.standard_normal((256, 4)).astype(np.float32)


def test_the_channel_axis_is_the_one_whose_variances_spread_widest():
    out = np.stack([RNG.normal(0, s, (64, 50)) for s in (100, 50, 0.01, 0.02, 0.015)], 1)
    axis, var = channel_axis(out)  # (64, 5, 50): the 5 channels, not the 50 anchors
    assert axis == 1 and var.shape == (5,)
    w = balance_weights(out)
    assert w.shape == (1, 5, 1)
    assert np.mean(w[0, :, 0] * var) == pytest.approx(1.0, rel=1e-5)  # predicting the channel means scores 1
    assert w[0, 1, 0] / w[0, 0, 0] == pytest.approx(var[0] / var[1], rel=1e-4)
    assert spread(out) > BALANCE_SPREAD and unbalanced(out)
    assert spread(RNG.normal(0, 1, (64, 10))) < BALANCE_SPREAD  # a classifier's logits: already balanced
    rare = RNG.normal(0, 1, (64, 20, 50)) * np.geomspace(1, 1e-3, 50)  # CTC logits with rare classes, last axis
    assert spread(rare) > BALANCE_SPREAD and not unbalanced(rare)  # KL over the classes is still the loss


def test_a_channel_that_never_varies_is_floored_at_a_tenth_of_the_median():
    out = np.stack([RNG.normal(0, 1, 500), RNG.normal(0, 1, 500), np.zeros(500)], 1)
    w = balance_weights(out)[0]
    assert np.isfinite(w).all()
    assert w[2] / w[0] == pytest.approx(10.0, rel=0.2)


@pytest.mark.parametrize("rank3", [False, True])
def test_loss_matches_numpy_and_the_gradient_matches_float64_finite_differences(rank3):
    student = toy(W1 + 0.3 * RNG.standard_normal(W1.shape), W2, rank3)
    teacher_out = session(toy(W1, W2, rank3)).run(["y"], {"x": X})[0]
    balance = balance_weights(teacher_out)
    assert balance.shape == ((1, C, 1) if rank3 else (1, C))
    tg = build_training_graph(student, None, "distill", distill="balanced", balance=balance)
    weights = read_weights(student, tg.trainable)
    out = session(tg.model).run([tg.loss, tg.logits], {"x": X[:16], tg.target: teacher_out[:16], **weights})
    expected = numpy_loss("distill", out[1], teacher_out[:16], distill="balanced", balance=balance)
    assert float(out[0]) == pytest.approx(expected, rel=1e-4)
    plain = numpy_loss("distill", out[1], teacher_out[:16], distill="mse")
    assert abs(expected - plain) > 0.5 * plain  # the weights change the loss
    check = check_gradients(student, {"x": X[:16]}, loss="distill", target=teacher_out[:16], distill="balanced",
                            balance=balance)
    assert check.errors and check.worst < 1e-3, check.errors


def test_balanced_needs_its_weights():
    from onnxprune.errors import BadInputError
    with pytest.raises(BadInputError, match="balance"):
        build_training_graph(toy(W1, W2), None, "distill", distill="balanced")


def _channel_errors(model: onnx.ModelProto, teacher: onnx.ModelProto) -> np.ndarray:
    """Relative squared error per channel on fresh inputs."""
    x = np.random.default_rng(9).standard_normal((512, 4)).astype(np.float32)
    got, want = (session(m).run(["y"], {"x": x})[0] for m in (model, teacher))
    return ((got - want) ** 2).mean((0, 2)) / want.var((0, 2))


def test_the_small_scale_channels_improve_under_the_balanced_loss_where_plain_squared_error_neglects_them():
    teacher = toy(W1, W2, rank3=True)
    student = toy(W1[:, :4], W2[:4], rank3=True)  # half the hidden units: it cannot match every channel
    data = Dataset({"x": X[:, None]})
    before = _channel_errors(student, teacher)
    runs = {mode: finetune(student, data, 6, teacher=teacher, distill=mode, lr=1e-2, batch_size=32, progress=False,
                           trainable=("w1",), threads=1, holdout=0.0, keep="last") for mode in ("mse", "balanced")}
    after = {mode: _channel_errors(r.model, teacher)[2:].mean() for mode, r in runs.items()}  # the scores
    assert after["mse"] > before[2:].mean()               # plain squared error trades the scores for the boxes
    assert after["balanced"] < 0.85 * before[2:].mean()   # the balanced loss improves them
    assert after["balanced"] < 0.8 * after["mse"]


def test_auto_keeps_kl_unless_the_output_packs_score_rows():
    data = Dataset({"x": X[:64, None]})
    result = finetune(toy(W1[:, :4], W2[:4]), data, 1, teacher=toy(W1, W2), lr=1e-3, batch_size=32,
                      progress=False, threads=1, holdout=0.0, distill="auto")
    assert result.distill == "kl"  # (N, C) like class logits: a softmax over C is what KL means
    detector = finetune(toy(W1[:, :4], W2[:4], True), data, 1, teacher=toy(W1, W2, True), lr=1e-3, batch_size=32,
                        progress=False, threads=1, holdout=0.0, distill="auto")
    # channels of unlike scales off the last axis but no score rows in [0, 1]: not a detector's head for
    # auto (which picks "detect" only there: tests/test_detect_distill.py); "balanced" is asked for by name
    assert detector.distill == "kl"
