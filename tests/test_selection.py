"""Criteria, local/global selection, targets, cost estimates, plans and sensitivity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, analyse
from onnxprune.api import prune
from onnxprune.graph.cost import count_macs, count_params
from onnxprune.score.calibration import collect_statistics
from onnxprune.load.data import load_npz
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.score.criteria import CRITERIA, NEEDS_DATA, score, wanted_statistics
from onnxprune.couple.plan import Plan, plan_from_json
from onnxprune.select.plan import CostModel, select_global, select_uniform
from onnxprune.apply.rewrite import apply_plan
from onnxprune.select.sensitivity import group_sensitivity

CALIB = FIXTURES / "digits_calib.npz"


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_scores_every_channel(name):
    model, dep = analyse(FIXTURES / "digits_cnn.onnx")
    stats = data = None
    if name in NEEDS_DATA:
        with pytest.raises(BadInputError):
            score(dep, name)
        data = load_npz(CALIB, {"input": 4}).take(32)
        stats = collect_statistics(model, data, wanted_statistics(dep, name))
    s = score(dep, name, stats=stats, data=data)
    assert s.shape == (dep.num_channels,) and np.isfinite(s).all()
    free = np.concatenate([g.channels[~g.frozen] for g in dep.groups])
    assert np.ptp(s[free]) > 0  # it actually ranks


def test_global_scope_respects_the_layer_cap():
    _, dep = analyse(FIXTURES / "resnet_tiny.onnx")
    scores = np.arange(dep.num_channels, dtype=float)  # earliest channels look least important
    plan = select_global(dep, scores, 0.5, max_layer_ratio=0.6)
    for grp, (kept, total) in zip(dep.groups, plan.kept_per_group):
        assert total - kept <= int(total * 0.6)
        assert kept >= 1
    prunable = sum(g.prunable for g in dep.groups)
    assert abs(plan.removed.sum() - 0.5 * prunable) <= len(dep.groups)


@pytest.mark.parametrize("name", ["resnet_tiny.onnx", "densenet_tiny.onnx", "transformer_tiny_dynamo.onnx",
                                  "unet_tiny.onnx", "flatten_fc.onnx", "mobilenetv2_tiny.onnx"])
def test_cost_model_is_exact(name):
    model, dep = analyse(FIXTURES / name)
    plan = select_uniform(dep, score(dep, "l2"), 0.4)
    costs = CostModel(dep)
    pruned = ModelGraph(apply_plan(plan), dep.graph.input_shapes)
    assert costs.total_macs == count_macs(dep.graph)
    assert costs.macs_after(plan.removed) == pytest.approx(count_macs(pruned), rel=1e-9)
    assert costs.params_after(plan.removed) == pytest.approx(count_params(pruned), rel=1e-9)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_target_macs_and_params_are_reached(scope):
    for kind in ("target_macs", "target_params"):
        result = prune(FIXTURES / "resnet_tiny.onnx", round_to=1, scope=scope, bench_rounds=0, **{kind: 0.5})
        key = "macs" if kind == "target_macs" else "params"
        achieved = result.report["after"][key] / result.report["before"][key]
        assert abs(achieved - 0.5) <= 0.02, (kind, achieved)


def test_exactly_one_amount_is_required():
    with pytest.raises(BadInputError):
        prune(FIXTURES / "chain.onnx", 0.3, target_macs=0.5)
    with pytest.raises(BadInputError):
        prune(FIXTURES / "chain.onnx")


def test_exclude_keeps_matching_groups_whole():
    result = prune(FIXTURES / "chain.onnx", 0.5, round_to=1, bench_rounds=0, exclude=["*conv1*", "onnx::Conv_2*"])
    model = onnx.load(str(FIXTURES / "chain.onnx"))
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dense = {i.name: list(i.dims) for i in model.graph.initializer}
    pruned = {i.name: list(i.dims) for i in result.model.graph.initializer}
    assert pruned[first_conv.input[1]][0] == dense[first_conv.input[1]][0] or result.plan.removed.sum() > 0


def test_plan_round_trip(tmp_path):
    model, dep = analyse(FIXTURES / "densenet_tiny.onnx")
    plan = select_uniform(dep, score(dep, "l1"), 0.5, round_to=1)
    data = json.loads(json.dumps(plan.to_json()))
    again = plan_from_json(dep, data)
    np.testing.assert_array_equal(again.removed, plan.removed)
    # the same plan applied through the API gives the same model
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    a = prune(FIXTURES / "densenet_tiny.onnx", plan=str(path), bench_rounds=0).model
    b = apply_plan(plan)
    assert [list(i.dims) for i in a.graph.initializer] == [list(i.dims) for i in b.graph.initializer]
    _, other = analyse(FIXTURES / "chain.onnx")
    with pytest.raises(BadInputError):
        plan_from_json(other, data)


def test_sensitivity_rows():
    _, dep = analyse(FIXTURES / "digits_cnn.onnx")
    data = load_npz(CALIB, {"input": 4}).take(32)
    rows = group_sensitivity(dep, data, ratios=(0.25, 0.75))
    assert {r["group"] for r in rows} == {g.id for g in dep.groups if g.prunable > 1}
    for row in rows:
        assert set(row["cosine"]) == {0.25, 0.75} and set(row["accuracy"]) == {0.25, 0.75}
        assert all(-1.0 <= c <= 1.0 + 1e-9 for c in row["cosine"].values())


def test_sensitivity_guided_allocation():
    """One fidelity-drop tolerance for all groups: robust groups lose more, the target is reached."""
    from onnxprune.select.sensitivity import select_by_sensitivity
    _, dep = analyse(FIXTURES / "digits_cnn.onnx")
    data = load_npz(CALIB, {"input": 4}).take(32)
    rows = group_sensitivity(dep, data, ratios=(0.25, 0.5, 0.75))
    base = score(dep, "l2")
    removed = [select_by_sensitivity(dep, rows, base, share).removed.sum() for share in (0.0, 0.3, 0.6, 0.9)]
    assert removed[0] == 0 and removed == sorted(removed) and removed[-1] > removed[1]
    result = prune(FIXTURES / "digits_cnn.onnx", target_macs=0.8, calib=CALIB, criterion="sensitivity",
                   recover="lstsq", round_to=1, bench_rounds=0, eval_data=FIXTURES / "digits_test.npz")
    assert abs(result.report["after"]["macs"] / result.report["before"]["macs"] - 0.8) <= 0.02
    assert result.report["fidelity"]["accuracy_pruned"] >= result.report["fidelity"]["accuracy_dense"] - 0.02
