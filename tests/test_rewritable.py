"""A latency target on a model with a group the rewrite cannot follow (khmersm, s14 smoke: exit 2 on
a valid model): the group is kept whole, the rest is pruned, and selection's refinement leaves the
groups every selection keeps whole (excluded, input encodings) alone on the latency path too."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import analyse, prune
from onnxprune.load.runtime import session
from onnxprune.select import latency
from onnxprune.select.rewritable import unrewritable_groups

DIM, WIDTH, HEADS, HIDDEN = 8, 16, 4, 32


def heads_model() -> onnx.ModelProto:
    """x -> MatMul -> 4 heads merged with the batch by a computed shape [batch * heads, T, 4] (as torch's
    MultiheadAttention does) -> Relu -> back -> MatMul -> Relu -> MatMul (a prunable hidden layer)."""
    rng = np.random.default_rng(0)
    hd = WIDTH // HEADS

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [const("w1", rng.standard_normal((DIM, WIDTH)).astype(np.float32)),
             const("w2", rng.standard_normal((WIDTH, HIDDEN)).astype(np.float32)),
             const("w3", rng.standard_normal((HIDDEN, 5)).astype(np.float32)),
             const("split", np.array([0, 0, HEADS, hd], np.int64)), const("i0", np.array([0], np.int64)),
             const("i1", np.array([1], np.int64)), const("nh", np.array([HEADS], np.int64)),
             const("hd", np.array([hd], np.int64)), const("back", np.array([0, 0, WIDTH], np.int64))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
             helper.make_node("Reshape", ["a", "split"], ["a4"], name="split_heads"),
             helper.make_node("Transpose", ["a4"], ["at"], perm=[0, 2, 1, 3], name="t1"),
             helper.make_node("Shape", ["x"], ["sx"], name="shape"),
             helper.make_node("Gather", ["sx", "i0"], ["b"], axis=0, name="g0"),
             helper.make_node("Gather", ["sx", "i1"], ["t"], axis=0, name="g1"),
             helper.make_node("Mul", ["b", "nh"], ["bh"], name="bh"),  # batch * heads: no constant patches it
             helper.make_node("Concat", ["bh", "t", "hd"], ["s3"], axis=0, name="cat3"),
             helper.make_node("Reshape", ["at", "s3"], ["a3"], name="merge_batch_heads"),
             helper.make_node("Relu", ["a3"], ["r3"], name="relu"),
             helper.make_node("Concat", ["b", "nh", "t", "hd"], ["s4"], axis=0, name="cat4"),
             helper.make_node("Reshape", ["r3", "s4"], ["r4"], name="unmerge"),
             helper.make_node("Transpose", ["r4"], ["rt"], perm=[0, 2, 1, 3], name="t2"),
             helper.make_node("Reshape", ["rt", "back"], ["r"], name="join_heads"),
             helper.make_node("MatMul", ["r", "w2"], ["f"], name="mm2"),
             helper.make_node("Relu", ["f"], ["fr"], name="relu2"),
             helper.make_node("MatMul", ["fr", "w3"], ["y"], name="mm3")]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _group_on(dep, tensor: str) -> int:
    return next(g.id for g in dep.groups if any(s.tensor == tensor for s in g.slots))


def test_the_group_behind_a_batch_times_heads_shape_is_found():
    dep = analyse(heads_model(), {"x": (1, 6, DIM)})
    heads, hidden = _group_on(dep, "a"), _group_on(dep, "f")
    assert dep.groups[heads].prunable == HEADS  # the analysis links it: only a rewrite finds the shape
    assert unrewritable_groups(dep, set()) == {heads}
    assert hidden not in unrewritable_groups(dep, set())
    assert unrewritable_groups(dep, {heads}) == set()  # kept whole already: nothing else fails


def test_a_latency_target_keeps_that_group_whole_and_prunes_the_rest():
    model = heads_model()
    calib = {"x": np.random.default_rng(1).standard_normal((8, 1, 6, DIM)).astype(np.float32)}
    result = prune(model, target_latency=0.8, calib=[{"x": s} for s in calib["x"]], input_shapes={"x": (1, 6, DIM)})
    per_group = {g["slots"][0].split("[")[0]: g for g in result.report["plan"]["per_group"]}
    widths = {i.name: numpy_helper.to_array(i).shape for i in result.model.graph.initializer}
    assert widths["w1"] == (DIM, WIDTH)  # the heads: whole
    assert result.report["plan"]["removed"] > 0 and widths["w3"][0] < HIDDEN, per_group  # the hidden layer: cut
    out = session(result.model).run(None, {"x": np.ones((3, 6, DIM), np.float32)})[0]  # the batch still follows
    assert out.shape == (3, 6, 5)


def test_a_ratio_target_cuts_the_rest_too():
    """The same trial before any selection: a ratio or MACs target cut the heads and exited 2 as well."""
    result = prune(heads_model(), ratio=0.5, input_shapes={"x": (1, 6, DIM)})
    widths = {i.name: numpy_helper.to_array(i).shape for i in result.model.graph.initializer}
    assert widths["w1"] == (DIM, WIDTH) and widths["w3"][0] < HIDDEN


def test_the_latency_search_refines_around_the_groups_kept_whole(monkeypatch):
    """khmersm: the heads were kept whole by every selection (an input encoding), but the refinement
    of the latency search's rounded plan was not told, cut a head and the rewrite exited 2."""
    from onnxprune.couple.plan import Plan

    seen = []

    def recording(select, cost, aim, **kw):
        seen.append(kw.get("skip"))
        return Plan(None, np.array([True, False]), {})

    model = SimpleNamespace(kept=lambda removed: 0.6, dep=SimpleNamespace(graph=SimpleNamespace(model="dense",
                                                                                               input_shapes={})),
                            costs=SimpleNamespace(macs_after=lambda removed: 50, total_macs=100))
    monkeypatch.setattr(latency, "search_ratio", recording)
    monkeypatch.setattr(latency, "session", lambda m, threads: m)
    monkeypatch.setattr(latency, "run_explained", lambda sess, feed, what: [])
    monkeypatch.setattr(latency, "paired_ratio", lambda dense, candidate, feed, rounds: 0.6)
    limits = latency.WidthLimits(skip={3})
    latency.most_macs({"a": None, "b": None}, model, 0.6, limits=limits)
    latency.search_latency(None, model, 0.6, 1, lambda p: p, feed={}, limits=limits)
    assert seen and all(s == {3} for s in seen)
