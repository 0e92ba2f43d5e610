"""The last steps of a target search weigh damage; input encodings the calibration data cannot judge stay whole."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.plan import Plan
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.select.coverage import input_encoded_groups
from onnxprune.select.plan import CostModel
from onnxprune.select.refine import refine_weighted

VOCAB, HIDDEN, SEQ = 16, 24, 8


def one_hot_mlp(seed: int = 0) -> onnx.ModelProto:
    """bytes [1, SEQ] int32 -> one-hot (Equal against a range, Cast) -> MatMul -> Relu -> MatMul -> [1, SEQ, 4]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(np.arange(VOCAB, dtype=np.int32), "range"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((HIDDEN, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Unsqueeze", ["bytes", "last"], ["col"]),
             helper.make_node("Equal", ["col", "range"], ["hot"]),
             helper.make_node("Cast", ["hot"], ["onehot"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["onehot", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "onehot", [helper.make_tensor_value_info("bytes", TensorProto.INT32, [1, SEQ])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dep():
    return build_dependency(ModelGraph(one_hot_mlp()))


def test_the_one_hot_axis_is_an_input_encoding_and_the_hidden_layer_is_not():
    dep = _dep()
    encoded = input_encoded_groups(dep)
    sizes = {grp.size for grp in dep.groups if grp.id in encoded}
    assert sizes == {VOCAB}
    assert any(grp.size == HIDDEN and grp.id not in encoded for grp in dep.groups)


def test_unseen_input_values_keep_their_rows_under_a_data_aware_target():
    # calibration uses 4 of the 16 byte values: a data-aware score calls the other 12 free
    calib = Dataset({"bytes": np.random.default_rng(1).integers(0, 4, (32, 1, SEQ)).astype(np.int32)})
    result = prune(one_hot_mlp(), target_macs=0.6, calib=calib, bench_rounds=0, round_to=1)
    weights = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
    assert weights["w1"].shape[0] == VOCAB  # every byte value still has its embedding row
    assert weights["w1"].shape[1] < HIDDEN  # the MACs came from the hidden layer


def test_input_values_keep_their_rows_without_data_too():
    # a data-free criterion ranks the byte values by their embedding rows' norms; the target search used
    # to cut most of them (magika 25.7 at 0.8 of the MACs, 87.4 at 0.5): every selection keeps them now
    for scope in ("local", "global"):
        result = prune(one_hot_mlp(), target_macs=0.6, criterion="l2", scope=scope, bench_rounds=0, round_to=1)
        weights = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}
        assert weights["w1"].shape[0] == VOCAB
        assert weights["w1"].shape[1] < HIDDEN


def test_refine_takes_the_cheapest_step_that_closes_the_gap():
    dep = _dep()
    costs = CostModel(dep)
    cost = lambda p: costs.macs_after(p.removed) / costs.total_macs  # noqa: E731
    hidden = next(grp for grp in dep.groups if grp.size == HIDDEN)
    vocab = next(grp for grp in dep.groups if grp.size == VOCAB)
    scores = np.ones(dep.num_channels)
    scores[vocab.channels] = np.linspace(1, 2, VOCAB)
    scores[hidden.channels] = np.linspace(0.1, 3, HIDDEN)  # a few hidden channels are nearly free
    start = Plan(dep, np.zeros(dep.num_channels, dtype=bool))
    target = 0.9
    plan = refine_weighted(start, scores, cost, target, round_to=1, tolerance=0.02)
    assert abs(cost(plan) - target) <= 0.02
    cut = plan.removed
    assert cut[hidden.channels].sum() > 0 and cut[vocab.channels].sum() == 0
    assert set(np.flatnonzero(cut)) <= set(hidden.channels[:5])  # the lowest-scored hidden channels
    skipped = refine_weighted(start, scores, cost, target, round_to=1, tolerance=0.02, skip={hidden.id})
    assert skipped.removed[hidden.channels].sum() == 0


def test_grams_past_the_budget_are_refused_largest_first():
    from onnxprune.score.gram_budget import within_budget
    wanted = {("a", 1): True, ("b", 1): True, ("c", 1): True, ("d", 1): False}
    shapes = {"a": (1, 100), "b": (1, 10), "c": (1, 50), "d": (1, 1000)}
    kept = within_budget(wanted, shapes, budget=8 * (10 ** 2 + 50 ** 2))
    assert kept == {("a", 1): False, ("b", 1): True, ("c", 1): True, ("d", 1): False}
    assert within_budget(wanted, shapes, budget=10 ** 9) == wanted


def _mlp(w2_scale: float = 1.0, duplicate: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32)
    if duplicate:
        w1[:, 1] = w1[:, 0]  # hidden channel 1 repeats channel 0: the next layer can do without it
    w2 = (w2_scale * rng.standard_normal((HIDDEN, 4))).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, VOCAB])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _relative_scores(model):
    from onnxprune.score.calibration import collect_statistics
    from onnxprune.score.criteria import score, wanted_statistics
    dep = build_dependency(ModelGraph(model))
    data = Dataset({"x": np.random.default_rng(4).standard_normal((64, 1, SEQ, VOCAB)).astype(np.float32)})
    stats = collect_statistics(model, data, wanted_statistics(dep, "relative"))
    hidden = next(grp for grp in dep.groups if grp.size == HIDDEN)
    return score(dep, "relative", stats=stats)[hidden.channels]


def test_relative_scores_are_shares_of_the_consumer_output():
    base = _relative_scores(_mlp())
    assert np.allclose(_relative_scores(_mlp(w2_scale=10.0)), base, rtol=1e-3)  # a layer's scale does not count
    assert 0 < base.max() < 1  # one channel never carries the whole output
    dup = _relative_scores(_mlp(duplicate=True))
    assert dup[1] < 0.05 * np.median(dup)  # the duplicate channel costs (almost) nothing once compensated


def test_mac_costs_are_the_macs_one_channel_carries():
    from onnxprune.select.mac_costs import mac_costs
    dep = build_dependency(ModelGraph(_mlp()))
    hidden = next(grp for grp in dep.groups if grp.size == HIDDEN)
    # one hidden channel: a column of w1 (SEQ x VOCAB MACs) and a row of w2 (SEQ x 4)
    assert mac_costs(dep)[hidden.id] == SEQ * VOCAB + SEQ * 4
