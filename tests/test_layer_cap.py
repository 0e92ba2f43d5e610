"""The per-layer cap (--max-layer-ratio) holds through the search's last width steps and across the
steps of iterative pruning, where it counts against the dense model's groups.

Before wave 16 the refinement that closes the gap to a MACs target cut the digits CNN's conv3 from 64 to
24 channels under the 0.5 cap, and `--steps 3` repeated it on each step's widths (64 -> 24 -> 8 -> 1,
24% accuracy)."""

from __future__ import annotations

import logging

import numpy as np
import onnx

from conftest import fixture_path
from onnxprune import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.plan import Plan
from onnxprune.couple.vocabulary import Slot
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.iterative import dense_floors, prune_iteratively
from onnxprune.options import FinetuneOptions, PruneOptions, Target
from onnxprune.select.refine import least_widths, refine_weighted

CALIB = str(fixture_path("digits_calib.npz"))
DIGITS = str(fixture_path("digits_cnn.onnx"))
DENSE = onnx.load(DIGITS)


def _dep(model: onnx.ModelProto):
    return build_dependency(ModelGraph(model))


def _conv_widths(model: onnx.ModelProto) -> dict[str, int]:
    """Output channels of each Conv, by its weight's name (kept through pruning)."""
    weights = {t.name: t.dims[0] for t in model.graph.initializer}
    return {n.input[1]: weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv"}


def _free(dep):
    return [g for g in dep.groups if not g.frozen.all()]


def test_least_widths_follow_the_cap_min_channels_and_floors():
    dep = _dep(DENSE)
    free = _free(dep)
    least = least_widths(dep, 0.5, 1)
    assert all(least[g.id] == g.size - g.size // 2 for g in free)
    assert least_widths(dep, 0.99, 40)[free[1].id] == 40  # --min-channels wins where it asks for more
    assert least_widths(dep, 0.5, 1, {free[0].id: 30})[free[0].id] == 30  # a floor wins where it is higher


def test_a_macs_target_keeps_every_conv_within_the_default_cap(caplog):
    with caplog.at_level(logging.WARNING, logger="onnxprune"):  # the CLI's set-up stops propagation
        pruned = prune(DIGITS, target_macs=0.5, calib=CALIB, calib_limit=16, bench_rounds=0).model
    said = [r.getMessage() for r in caplog.records if "target not met" in r.getMessage()]
    assert said and "of the MACs (target 0.500)" in said[0] and "--max-layer-ratio" in said[0]
    dense, kept = _conv_widths(DENSE), _conv_widths(pruned)
    assert all(kept[w] >= dense[w] - int(dense[w] * 0.5) for w in dense), (dense, kept)  # fisher's cap: 0.5
    assert sum(kept.values()) < sum(dense.values())


def test_the_refinement_takes_no_width_step_under_the_least_width():
    dep = _dep(DENSE)
    scores = np.arange(dep.num_channels, dtype=float) + 1.0
    start = Plan(dep, np.zeros(dep.num_channels, dtype=bool), {})
    share_kept = lambda p: 1.0 - float(p.removed.mean())  # noqa: E731
    least = least_widths(dep, 0.5, 1)
    capped = refine_weighted(start, scores, share_kept, 0.05, 8, 0.001, least=least)
    kept = {g.id: g.size - int(capped.removed[g.channels].sum()) for g in _free(dep)}
    assert all(kept[g.id] >= least[g.id] for g in _free(dep)), kept
    uncapped = refine_weighted(start, scores, share_kept, 0.05, 8, 0.001)  # without a floor it goes deeper
    assert uncapped.removed.sum() > capped.removed.sum()


def test_dense_floors_give_each_pruned_group_its_dense_groups_least_width():
    dense = _dep(DENSE)
    pruned = prune(DIGITS, target_macs=0.7, calib=CALIB, calib_limit=16, bench_rounds=0).model
    step = _dep(pruned)
    least = {g.id: 3 * g.size for g in dense.groups}  # distinct per dense group, whatever the cap
    floors = dense_floors(step, dense, least)
    for weight in _conv_widths(DENSE):
        ours = int(step.channel_group[step.elements(Slot(weight, 0))[0]])
        theirs = int(dense.channel_group[dense.elements(Slot(weight, 0))[0]])
        assert floors[ours] == least[theirs]


def test_three_steps_keep_the_cap_of_the_dense_model():
    options = PruneOptions(target=Target(macs=0.5), calib_limit=16, bench_rounds=0)
    result = prune_iteratively(DIGITS, 3, calib=CALIB, options=options, finetune=FinetuneOptions(epochs=3, lr=1e-4))
    dense, kept = _conv_widths(DENSE), _conv_widths(result.model)
    assert all(kept[w] >= dense[w] - int(dense[w] * 0.5) for w in dense), (dense, kept)
    assert [s["step"] for s in result.report["iterative"]["trail"]] == [1, 2, 3]


def test_global_rounding_rounds_up_where_nearest_would_pass_the_cap():
    from onnxprune.select.plan import select_global
    dep = _dep(DENSE)
    scores = np.arange(dep.num_channels, dtype=float) + 1.0
    plan = select_global(dep, scores, 0.9, round_to=24, max_layer_ratio=0.5)  # every group taken to its cap
    least = least_widths(dep, 0.5, 1)
    kept = {g.id: g.size - int(plan.removed[g.channels].sum()) for g in _free(dep)}
    # a 64-wide group capped at 32 rounds to 24 by nearest: up to 48 instead
    assert all(kept[g.id] >= least[g.id] for g in _free(dep)), kept
    assert all(kept[g.id] % 24 == 0 or kept[g.id] == g.size for g in _free(dep)), kept
    assert plan.removed.any()
