"""Multi-step pruning without training (onnxprune/stepwise.py): the schedule, the score mapping from a
pruned model back to the dense channels, and whole runs that end valid at the requested MACs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from conftest import analyse, fixture_path, random_plan
from onnxprune import prune
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.options import DEEP_CRITERION, Target
from onnxprune.stepwise import prune_stepwise, step_targets, to_dense

CALIB = str(fixture_path("digits_calib.npz"))
DIGITS = str(fixture_path("digits_cnn.onnx"))


def test_step_targets_geometric_and_exact_at_the_end():
    got = [t.macs for t in step_targets(Target(macs=0.5), 3)]
    assert got == pytest.approx([0.5 ** (1 / 3), 0.5 ** (2 / 3), 0.5])
    assert got[-1] == 0.5 and got[0] > got[1] > got[2]
    assert [t.params for t in step_targets(Target(params=0.6), 1)] == [0.6]
    with pytest.raises(BadInputError, match="target-macs"):
        step_targets(Target(ratio=0.3), 2)
    with pytest.raises(BadInputError, match="at least 1"):
        step_targets(Target(macs=0.5), 0)


def _vector_values(dep: Dependency) -> np.ndarray:
    """Each channel's value in the first 1-D constant (a bias, a norm's scale) that holds it; NaN if none.
    Slicing keeps these values, so they identify a channel in the dense and the pruned model alike."""
    out = np.full(dep.num_channels, np.nan)
    for slot in reversed(dep.slots):
        if slot.tensor in dep.graph.constants and dep.graph.const(slot.tensor).ndim == 1:
            out[dep.elements(slot)] = dep.graph.const(slot.tensor).astype(np.float64)
    return out


@pytest.mark.parametrize("name", ["c2f_tiny.onnx", "concat.onnx", "digits_cnn.onnx"])
def test_to_dense_maps_each_pruned_channel_to_its_dense_channel(name):
    model, dense = analyse(fixture_path(name))
    plan = random_plan(dense, 0.4, seed=3)
    step = build_dependency(ModelGraph(apply_plan(plan)))
    expected = _vector_values(dense)
    fallback = np.full(dense.num_channels, -7.0)
    mapped, missing = to_dense(dense, step, plan.removed, _vector_values(step), fallback)
    assert (mapped[plan.removed] == 0).all()
    checked = ~plan.removed & ~np.isnan(expected) & (mapped != -7.0)
    assert checked.sum() >= 8
    np.testing.assert_array_equal(mapped[checked], expected[checked])
    assert missing == int((mapped[~plan.removed] == -7.0).sum())


def _accuracy(model) -> float:
    test = np.load(fixture_path("digits_test.npz"))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: test["input"]})[0]
    assert np.isfinite(out).all()
    return float((out.argmax(1) == test["labels"]).mean())


def test_stepwise_ends_at_the_target_valid_and_accurate():
    # a cap of 0.75: the default's 0.5 stops the three-group digits CNN at 0.526 of the MACs (target not met)
    r = prune_stepwise(DIGITS, 3, target_macs=0.5, calib=CALIB, calib_limit=16, bench_rounds=0, max_layer_ratio=0.75)
    kept = r.report["after"]["macs"] / r.report["before"]["macs"]
    assert 0.45 <= kept <= 0.505
    trail = r.report["stepwise"]["trail"]
    assert [s["step"] for s in trail] == [1, 2, 3] and trail[-1]["target"] == 0.5
    removed = [s["removed_channels"] for s in trail]
    assert removed == sorted(removed) and removed[0] > 0
    assert all(s["unmapped_channels"] == 0 and s["changed_by_rescoring"] >= 0 for s in trail[1:])
    assert r.report["options"]["criterion"] == DEEP_CRITERION and r.report["options"]["recover"] == "sequential"
    assert _accuracy(r.model) >= 0.95  # dense 98.5; 16 unlabelled samples, no training


def test_one_step_is_one_shot_pruning():
    one = prune_stepwise(DIGITS, 1, target_macs=0.6, criterion="l2", scope="global", recover="none",
                         bench_rounds=0)
    ref = prune(DIGITS, target_macs=0.6, criterion="l2", scope="global", recover="none", bench_rounds=0)
    np.testing.assert_array_equal(one.plan.removed, ref.plan.removed)
    assert _accuracy(one.model) == _accuracy(ref.model)


def test_data_free_steps_keep_earlier_removals():
    r = prune_stepwise(DIGITS, 2, target_macs=0.6, criterion="l2", scope="local", bench_rounds=0)
    trail = r.report["stepwise"]["trail"]
    assert trail[0]["removed_channels"] <= trail[1]["removed_channels"]
    assert r.report["after"]["macs"] / r.report["before"]["macs"] <= 0.605


def test_bad_requests_are_one_message():
    with pytest.raises(BadInputError, match="target-macs"):
        prune_stepwise(DIGITS, 2, ratio=0.3)
    with pytest.raises(BadInputError, match="fine-tuning"):
        prune_stepwise(DIGITS, 2, target_macs=0.5, calib=CALIB, finetune_epochs=1)
