"""Feature distillation at the pruned layers' own outputs (recover/features.sliced_points): each kept
channel is matched to its dense channel, the target is the dense tensor at those indices, and a run
that uses them brings those channels closer to the dense model's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.autodiff.feature_loss import numpy_feature_loss
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.features import match_channels, sliced_points, with_outputs
from onnxprune.recover.finetune import finetune

TEACHER = onnx.load(str(FIXTURES / "resnet_tiny.onnx"))
X = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def student() -> onnx.ModelProto:
    return prune(TEACHER, target_macs=0.5, calib=[{"input": X[:2]}], recover="none", bench_rounds=0).model


def test_kept_channels_are_matched_in_order_and_refused_out_of_order():
    dense = RNG.standard_normal((4, 6, 5, 5))
    kept = np.asarray([0, 2, 5])
    near = dense[:, kept] + 0.05 * RNG.standard_normal((4, 3, 5, 5))
    np.testing.assert_array_equal(match_channels(near, dense, 1), kept)
    assert match_channels(dense[:, [2, 0, 5]], dense, 1) is None  # pruning never reorders channels
    assert match_channels(RNG.standard_normal((4, 3, 5, 5)), dense, 1) is None  # no channel of the dense tensor


def _values(model, names):
    return session(with_outputs(model, names)).run(names, {"input": X})


def test_pruned_outputs_are_found_with_the_dense_channels_they_kept(student):
    points = sliced_points(student, TEACHER, {"input": X})
    assert points
    names = list(points)
    for (axis, kept), s, t in zip(points.values(), _values(student, names), _values(TEACHER, names)):
        assert s.shape[axis] == len(kept) < t.shape[axis]
        t_kept = np.take(t, kept, axis=axis)
        corr = [np.corrcoef(np.take(s, c, axis).ravel(), np.take(t_kept, c, axis).ravel())[0, 1] for c in range(len(kept))]
        assert min(corr) > 0.5


def test_a_run_with_features_brings_the_kept_channels_closer(student):
    points = sliced_points(student, TEACHER, {"input": X})
    data = Dataset({"input": np.random.default_rng(2).standard_normal((96, 1, 3, 32, 32)).astype(np.float32)})
    names = list(points)
    targets = [np.take(t, kept, axis=axis) for (axis, kept), t in zip(points.values(), _values(TEACHER, names))]
    after = {}
    for weight in (0.0, 1.0):  # outputs only, then with the features
        result = finetune(student, data, 2, teacher=TEACHER, progress=False, threads=1, batch_size=16, lr=1e-3,
                          features=weight, holdout=0.0)
        after[weight] = numpy_feature_loss(_values(result.model, names), targets, 1.0)
    before = numpy_feature_loss(_values(student, names), targets, 1.0)
    # measured: 0.103 before, 0.057 outputs only, 0.031 with the features (0.066, 0.061, 0.013 on the plan that
    # broke the per-layer cap, before wave 16)
    assert after[1.0] < 0.65 * min(before, after[0.0])
