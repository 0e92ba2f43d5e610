"""Width rounding counts the columns each channel holds in the weights (select/width_step.py): a head is
many columns wide, so head counts are not rounded; a grouped conv's coupled channel is several filters
wide, so fewer of them make a multiple of --round-to."""

from __future__ import annotations

import onnx
from conftest import FIXTURES, analyse, oracle_gap

from onnxprune.score.criteria import score
from onnxprune.select.plan import select_global, select_uniform
from onnxprune.select.width_step import group_steps


def _weight_widths(model: onnx.ModelProto) -> list[int]:
    """Every MatMul / Gemm / Conv weight's dimensions."""
    consts = {t.name: list(t.dims) for t in model.graph.initializer}
    return [d for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
            for name in n.input[1:2] if name in consts for d in consts[name]]


def test_a_head_group_steps_by_one_head_and_an_ffn_group_by_round_to():
    _, dep = analyse(FIXTURES / "transformer_tiny.onnx")
    steps = group_steps(dep, 8)
    heads = [g for g in dep.groups if g.prunable and g.size == 4]
    ffn = [g for g in dep.groups if g.prunable and g.size == 64]
    assert heads and ffn
    assert {steps[g.id] for g in heads} == {1} and {steps[g.id] for g in ffn} == {8}
    assert set(group_steps(dep, 1).values()) == {1}


def test_heads_go_one_at_a_time_and_every_projection_stays_a_multiple_of_round_to():
    model, dep = analyse(FIXTURES / "transformer_tiny.onnx")
    plan = select_uniform(dep, score(dep, "l2"), 0.25, round_to=2)
    heads = [g for g in dep.groups if g.prunable and g.size == 4]
    assert [int((~plan.removed[g.channels]).sum()) for g in heads] == [3, 3]  # 4 rounded to 2 kept all 4 before
    assert oracle_gap(model, plan) < 1e-4
    from onnxprune.apply.rewrite import apply_plan
    assert all(w % 2 == 0 for w in _weight_widths(apply_plan(plan)))


def test_a_grouped_convs_coupled_channels_round_so_that_its_filters_are_a_multiple_of_round_to():
    """grouped.onnx's last conv (16 filters, 4 groups) couples 4 channels of 4 filters each: 2 of them make 8
    filters. Narrower than round_to, it was rounded to single channels (4 or 12 filters)."""
    model, dep = analyse(FIXTURES / "grouped.onnx")
    steps = group_steps(dep, 8)
    assert sorted(steps[g.id] for g in dep.groups if g.prunable) == [2, 8, 8]
    from onnxprune.apply.rewrite import apply_plan
    for ratio in (0.3, 0.6):
        plan = select_uniform(dep, score(dep, "l2"), ratio, round_to=8)
        pruned = apply_plan(plan)
        weight = next(n.input[1] for n in pruned.graph.node if n.name == "/g4/g4.0/Conv")
        filters = next(t.dims[0] for t in pruned.graph.initializer if t.name == weight)
        assert filters == 8
        assert oracle_gap(model, plan) < 1e-4


def test_a_per_head_bias_added_to_the_scores_does_not_count_as_a_weight():
    """A relative-position / ALiBi bias (1, heads, L, L) holds one index per head, but no kernel's width
    depends on it: the heads still step by one."""
    from onnx import helper, numpy_helper
    from onnxprune.couple.dependency import build_dependency
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load.runtime import session
    import numpy as np
    model = onnx.load(str(FIXTURES / "transformer_tiny.onnx"))
    nodes = list(model.graph.node)
    at = next(k for k, n in enumerate(nodes) if n.name == "/layers/layers.0/attn/Mul")
    softmax = next(n for n in nodes if n.name == "/layers/layers.0/attn/Softmax")
    bias = np.random.default_rng(0).normal(size=(1, 4, 16, 16)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(bias, "rel_bias"))
    nodes.insert(at + 1, helper.make_node("Add", [nodes[at].output[0], "rel_bias"], ["biased"], name="bias_add"))
    softmax.input[0] = "biased"
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    session(model)  # a valid model
    dep = build_dependency(ModelGraph(model))
    heads = [g for g in dep.groups if g.prunable and g.size == 4]
    assert any(dep.graph.is_const(s.tensor) and s.tensor == "rel_bias" for g in heads for s in g.slots)
    assert {group_steps(dep, 8)[g.id] for g in heads} == {1}


def test_no_selector_rounds_a_group_past_the_per_group_cap():
    """The sensitivity and damage selectors rounded to the nearest step: grouped.onnx's 4-channel group
    stepping by 2 lost half its channels under a 0.3 cap."""
    import numpy as np
    from onnxprune.select.allocate import PriceAllocator
    from onnxprune.select.sensitivity import select_by_sensitivity
    _, dep = analyse(FIXTURES / "grouped.onnx")
    rows = [{"group": g.id, "cosine": {0.25: 1.0, 0.5: 1.0, 0.75: 1.0}} for g in dep.groups if g.prunable]
    scores = np.arange(dep.num_channels, dtype=float)
    plans = [select_by_sensitivity(dep, rows, scores, 0.9, round_to=8, max_layer_ratio=0.3),
             PriceAllocator(dep, rows, scores, 8, 0.3, 1)(0.9), select_global(dep, scores, 0.9, 8, 0.3)]
    for plan in plans:
        assert all(plan.removed[g.channels].mean() <= 0.3 for g in dep.groups if g.prunable)
        assert plan.removed.any()


def test_the_hidden_width_turns_on_when_rounding_keeps_the_target_out_of_reach():
    """`--hidden auto` compares the target with the floor the groups can reach; that floor now counts the
    rounding the selectors apply (a 64-wide FFN group under a 0.4 cap keeps 39 channels, 48 at a step of 16)."""
    from onnxprune.hidden_stage import reachable, wants_hidden
    from onnxprune.options import PruneOptions, Target
    _, dep = analyse(FIXTURES / "transformer_tiny.onnx")
    loose = PruneOptions(target=Target(macs=0.8), round_to=1, max_layer_ratio=0.4)
    rounded = PruneOptions(target=Target(macs=0.8), round_to=16, max_layer_ratio=0.4)
    assert reachable(dep, loose) < 0.8 < reachable(dep, rounded)
    assert not wants_hidden(dep, loose, True)
    assert wants_hidden(dep, rounded, True)
