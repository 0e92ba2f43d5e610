"""Intermediate-feature distillation: where it matches (consumers of pruned groups, same width in both
models), its loss and gradient against float64 numpy and finite differences, and a run that uses it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.feature_loss import numpy_feature_loss
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.weights import read_weights
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.features import feature_points, with_outputs
from onnxprune.recover.finetune import finetune

TEACHER = onnx.load(str(FIXTURES / "resnet_tiny.onnx"))
X = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def student() -> onnx.ModelProto:
    # no recovery: the student's features must differ from the teacher's for the loss to be tested
    # 0.6: at 0.5 every free group loses its capped half, and no consumer keeps its width to match at
    return prune(TEACHER, target_macs=0.6, calib=[{"input": X[:2]}], recover="none", bench_rounds=0).model


def test_points_are_outputs_of_consumers_whose_width_did_not_change(student):
    points = feature_points(student, TEACHER, {"input": X[:2]})
    assert points
    s = session(with_outputs(student, points)).run(points, {"input": X[:2]})
    t = session(with_outputs(TEACHER, points)).run(points, {"input": X[:2]})
    assert all(a.shape == b.shape for a, b in zip(s, t))
    produced = {n.output[0]: n for n in student.graph.node}
    assert all(produced[p].op_type == "Conv" for p in points)


def _graph_loss(tg, feeds: dict, weights: dict) -> tuple[float, dict]:
    sess = session(tg.model)
    names = [tg.loss] + [tg.grads[w] for w in tg.trainable]
    out = sess.run(names, {**feeds, **weights})
    return float(out[0]), dict(zip(tg.trainable, out[1:]))


def test_loss_matches_numpy_and_its_gradient_matches_finite_differences(student):
    points = feature_points(student, TEACHER, {"input": X[:2]})
    weight = 0.7
    tg = build_training_graph(student, None, "distill", temperature=2.0,
                              features=(points, weight), input_shapes={"input": (1, 3, 32, 32)})
    assert set(tg.feature_targets) == set(points)
    logits_name = tg.logits
    teacher_out = session(with_outputs(TEACHER, points)).run([logits_name, *points], {"input": X[:4]})
    student_out = session(with_outputs(student, points)).run([logits_name, *points], {"input": X[:4]})
    feeds = {"input": X[:4], tg.target: teacher_out[0], **{tg.feature_targets[p]: v for p, v in zip(points, teacher_out[1:])}}
    weights = read_weights(student, tg.trainable)
    loss, grads = _graph_loss(tg, feeds, weights)
    expected = numpy_loss("distill", student_out[0], teacher_out[0], temperature=2.0) + \
        numpy_feature_loss(student_out[1:], teacher_out[1:], weight)
    assert loss == pytest.approx(expected, rel=1e-3)  # float32 graph, float64 numpy
    assert numpy_feature_loss(student_out[1:], teacher_out[1:], weight) > 1e-3  # the features do differ
    rng = np.random.default_rng(1)
    direction = {w: rng.standard_normal(v.shape).astype(np.float32) for w, v in weights.items()}
    eps = 1e-3
    plus, _ = _graph_loss(tg, feeds, {w: v + eps * direction[w] for w, v in weights.items()})
    minus, _ = _graph_loss(tg, feeds, {w: v - eps * direction[w] for w, v in weights.items()})
    analytic = sum(float(np.sum(grads[w].astype(np.float64) * direction[w])) for w in weights)
    assert (plus - minus) / (2 * eps) == pytest.approx(analytic, rel=2e-2)
    plain = build_training_graph(student, None, "distill", temperature=2.0, input_shapes={"input": (1, 3, 32, 32)})
    _, plain_grads = _graph_loss(plain, {"input": X[:4], plain.target: teacher_out[0]}, weights)
    without = sum(float(np.sum(plain_grads[w].astype(np.float64) * direction[w])) for w in weights)
    assert abs(analytic - without) > 0.2 * abs(analytic)  # the feature terms carry a real share of the gradient


def test_a_run_with_features_trains_and_brings_the_features_closer(student):
    data = Dataset({"input": np.random.default_rng(2).standard_normal((96, 1, 3, 32, 32)).astype(np.float32)})
    points = feature_points(student, TEACHER, {"input": X[:2]})
    result = finetune(student, data, 2, teacher=TEACHER, progress=False, threads=1, batch_size=16, lr=1e-3,
                      features=1.0, holdout=0.0)
    assert all(np.isfinite(h["loss"]) for h in result.history[1:])
    before = session(with_outputs(student, points)).run(points, {"input": X})
    after = session(with_outputs(result.model, points)).run(points, {"input": X})
    target = session(with_outputs(TEACHER, points)).run(points, {"input": X})
    assert numpy_feature_loss(after, target, 1.0) < numpy_feature_loss(before, target, 1.0)


def test_a_negative_feature_weight_is_bad_input():
    from onnxprune.errors import BadInputError
    from onnxprune.options import FinetuneOptions
    with pytest.raises(BadInputError, match="--feature-distill"):
        FinetuneOptions(epochs=1, features=-1.0)
