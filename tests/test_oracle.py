"""The zero-channel oracle on every fixture: pruning zeroed channels must not change the outputs."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES, analyse, oracle_gap, random_plan
from onnxprune.score.criteria import score
from onnxprune.select.plan import select_uniform

MODELS = sorted(p.name for p in FIXTURES.glob("*.onnx"))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_removal_is_exact(name, seed):
    model, dep = analyse(FIXTURES / name)
    assert sum(g.prunable for g in dep.groups) > 0, f"{name}: nothing prunable"
    plan = random_plan(dep, 0.5, seed)
    assert plan.removed.any()
    assert oracle_gap(model, plan) < 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_magnitude_plan_is_exact(name):
    model, dep = analyse(FIXTURES / name)
    plan = select_uniform(dep, score(dep, "l2"), 0.5, round_to=1)
    assert oracle_gap(model, plan) < 1e-5


def test_oracle_detects_a_wrong_rewrite():
    """The oracle is not vacuous: slicing a weight at the wrong indices is caught."""
    model, dep = analyse(FIXTURES / "chain.onnx")
    plan = random_plan(dep, 0.5, 0)
    removed = plan.removed.copy()
    grp = next(g for g in dep.groups if g.prunable > 2)
    kept = grp.channels[~removed[grp.channels]]
    gone = grp.channels[removed[grp.channels]]
    removed[kept[0]], removed[gone[0]] = True, False  # remove a different channel than the one zeroed
    from onnxprune.check.oracle import zero_removed
    from onnxprune.couple.plan import Plan
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.load.runtime import run_dataset, session
    from onnxprune.load.data import synthetic_dataset
    zeroed = session(zero_removed(dep, plan.removed))
    wrong = session(apply_plan(Plan(dep, removed, {})))
    data = synthetic_dataset(zeroed, dep.graph.input_shapes, 2)
    a, b = run_dataset(zeroed, data)[0], run_dataset(wrong, data)[0]
    assert np.abs(a - b).max() > 1e-4
