"""fisher's taps: the probe graph's per-channel sum(x * dx) at a linear layer equals the sum of W * dW over
that channel's slice of W (the form fisher computed before taps), on every committed fixture, from one
backward pass that returns both; and the taps skip the weight gradients (the point of them)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper, numpy_helper

from conftest import FIXTURES, analyse
from onnxprune.autodiff.probe import build_probe_graph
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.ops import linear_sites
from onnxprune.couple.vocabulary import Slot
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.runtime import session
from onnxprune.score.criteria import per_index
from onnxprune.score.fisher import fisher_scores

MODELS = sorted(p.name for p in FIXTURES.glob("*.onnx") if not p.name.startswith("digits_mlp_init"))


def _single_reader_sites(g) -> list:
    """Linear sites whose weight no other node reads (a shared weight's gradient mixes its readers)."""
    sites = [s for _, s in linear_sites(g)]
    readers = Counter(t for n in g.nodes for t in n.inputs if t)
    return [s for s in sites if readers[s.weight] == 1]


def _feeds(model, g, pg, rng) -> dict:
    sess = session(model)
    data = synthetic_dataset(sess, g.input_shapes, 1)
    feed = {k: np.asarray(v[0]) for k, v in data.inputs.items()}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    inputs = {i.name for i in session(pg.model).get_inputs()}
    probes = {p: rng.standard_normal(outs[o].shape).astype(outs[o].dtype) for o, p in pg.probes.items()}
    return {**{k: v for k, v in feed.items() if k in inputs}, **probes}


@pytest.mark.parametrize("name", MODELS)
def test_tap_equals_weight_times_its_gradient(name):
    model, dep = analyse(FIXTURES / name)
    g = dep.graph
    sites = _single_reader_sites(g)
    if not sites:
        pytest.skip("no linear layer with a weight of its own")
    pg = build_probe_graph(model, [s.weight for s in sites], input_shapes=g.input_shapes,
                           taps=[(s.x, s.weight) for s in sites])
    compared = [s for s in sites if (s.x, s.weight) in pg.taps and s.weight in pg.grads]
    assert compared, "no site got both a tap and a weight gradient"
    assert {(s.x, s.weight) for s in sites if s.weight in pg.grads} == set(pg.taps)  # complete gradient <=> tap
    names = [pg.grads[s.weight] for s in compared] + [pg.taps[(s.x, s.weight)] for s in compared]
    outs = session(pg.model).run(names, _feeds(model, g, pg, np.random.default_rng(0)))
    for s, grad, tap in zip(compared, outs[:len(compared)], outs[len(compared):]):
        expected = per_index(g.const(s.weight).astype(np.float64) * grad, s.weight_axis).sum(1)
        scale = max(np.abs(expected).max(), 1e-12)
        assert tap.shape == expected.shape
        assert np.abs(tap - expected).max() <= 1e-4 * scale, (s.x, s.weight, tap, expected)


def test_taps_alone_compute_no_weight_gradient():
    """Tapping every layer and asking for no weight leaves no weight-gradient output and fewer nodes."""
    model, dep = analyse(FIXTURES / "resnet_tiny.onnx")
    sites = _single_reader_sites(dep.graph)
    taps = [(s.x, s.weight) for s in sites]
    tapped = build_probe_graph(model, [], input_shapes=dep.graph.input_shapes, taps=taps)
    weighted = build_probe_graph(model, [s.weight for s in sites], input_shapes=dep.graph.input_shapes)
    assert not tapped.grads and len(tapped.taps) == len(sites)
    assert len(tapped.model.graph.node) < len(weighted.model.graph.node)
    assert {o.name for o in tapped.model.graph.output} == set(tapped.taps.values())


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_float16_taps_sum_in_float32():
    """A float16 layer's per-channel sum over positions can pass float16's 65504; the tap sums in float32."""
    w = np.full((512, 4, 1, 1), 0.5, np.float16)
    v = helper.make_tensor_value_info
    model = _model([helper.make_node("Cast", ["x"], ["xh"], to=T.FLOAT16), helper.make_node("Conv", ["xh", "w"], ["o"]),
                    helper.make_node("Cast", ["o"], ["out"], to=T.FLOAT)],
                   [v("x", T.FLOAT, [1, 4, 16, 16])], [v("out", T.FLOAT, [1, 512, 16, 16])], {"w": w})
    pg = build_probe_graph(model, [], input_shapes={"x": (1, 4, 16, 16)}, taps=[("xh", "w")])
    (probe,) = pg.probes.values()
    (tap,) = session(pg.model).run([pg.taps[("xh", "w")]], {"x": np.ones((1, 4, 16, 16), np.float32),
                                                            probe: np.ones((1, 512, 16, 16), np.float32)})
    assert tap.dtype == np.float32
    np.testing.assert_allclose(tap, np.full(4, 512 * 0.5 * 256), rtol=1e-3)  # 65536 per channel: inf in float16


def test_a_channel_vector_is_its_own_sum():
    """x of rank 1 (MatMul(x[K], W[K, N])): the tap is x * dx itself, one value per channel."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    w, w2 = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
                    helper.make_node("MatMul", ["z", "w2"], ["o"])],
                   [v("x", T.FLOAT, [6])], [v("o", T.FLOAT, [3])], {"w": w, "w2": w2})
    pg = build_probe_graph(model, ["w2"], input_shapes={"x": (6,)}, taps=[("z", "w2")])
    (probe,) = pg.probes.values()
    x, p = rng.standard_normal(6).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    tap, grad = session(pg.model).run([pg.taps[("z", "w2")], pg.grads["w2"]], {"x": x, probe: p})
    assert tap.shape == (5,)
    np.testing.assert_allclose(tap, (w2 * grad).sum(1), rtol=1e-5)


def _if_rank_model() -> onnx.ModelProto:
    """A pooled vector (1, N, 6) squeezed to (N, 6) by an If when the batch is 1, kept (1, N, 6) otherwise, then
    MatMul layers: the channel axis of the first MatMul's input is 1 at batch 1 and 2 at batch 2."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    then = helper.make_graph([helper.make_node("Squeeze", ["p", "ax0"], ["t"])], "then", [], [v("t", T.FLOAT, None)],
                             [numpy_helper.from_array(np.array([0], np.int64), "ax0")])
    other = helper.make_graph([helper.make_node("Identity", ["p"], ["e"])], "else", [], [v("e", T.FLOAT, None)])
    inits = {"w0": rng.standard_normal((6, 3, 1, 1)).astype(np.float32), "s3": np.array([1, -1, 6], np.int64),
             "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "wm": rng.standard_normal((6, 5)).astype(np.float32), "wo": rng.standard_normal((5, 4)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["a1"]),
             helper.make_node("GlobalAveragePool", ["a1"], ["g"]), helper.make_node("Reshape", ["g", "s3"], ["p"]),
             helper.make_node("Shape", ["x"], ["sx"]), helper.make_node("Gather", ["sx", "zero"], ["n"], axis=0),
             helper.make_node("Equal", ["n", "one"], ["cond"]),
             helper.make_node("If", ["cond"], ["q"], then_branch=then, else_branch=other),
             helper.make_node("MatMul", ["q", "wm"], ["h"]), helper.make_node("Relu", ["h"], ["h1"]),
             helper.make_node("MatMul", ["h1", "wo"], ["o"])]
    return _model(nodes, [v("x", T.FLOAT, ["N", 3, 8, 8])], [v("o", T.FLOAT, None)], inits)


def test_the_channel_axis_is_read_on_the_probed_graph():
    """Analysed at batch 1, probed at the data's batch 2: an If the shapes decide takes the other branch and
    the MatMul input's rank changes. Its channels still get their own scores (before: the analysis's axis
    summed the batch axis, and every channel fell back to one value)."""
    model = _if_rank_model()
    dep = build_dependency(ModelGraph(model, {"x": (1, 3, 8, 8)}))
    data = synthetic_dataset(session(model), {"x": (2, 3, 8, 8)}, 2)
    scores = fisher_scores(dep, data)
    for tensor, size in (("q", 6), ("h1", 5)):  # the MatMul inputs: squeezed pool, hidden units
        channels = dep.elements(Slot(tensor, 1))
        assert len(channels) == size and len(np.unique(np.round(scores[channels], 9))) == size, scores[channels]


def test_a_shared_weight_splits_into_its_readers_shares():
    """One weight read by two layers on different inputs: each tap is its own layer's share, and the two add
    up to W * dW over the shared weight (before taps each site was credited with the total, counted twice)."""
    rng = np.random.default_rng(0)
    v = helper.make_tensor_value_info
    inits = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in
             (("w1", (4, 3, 3, 3)), ("w2", (4, 3, 3, 3)), ("w", (5, 4, 3, 3)))}
    model = _model([helper.make_node("Conv", ["x", "w1"], ["a0"], pads=[1] * 4), helper.make_node("Relu", ["a0"], ["a"]),
                    helper.make_node("Conv", ["x", "w2"], ["b0"], pads=[1] * 4), helper.make_node("Relu", ["b0"], ["b"]),
                    helper.make_node("Conv", ["a", "w"], ["c"], pads=[1] * 4),
                    helper.make_node("Conv", ["b", "w"], ["d"], pads=[1] * 4), helper.make_node("Add", ["c", "d"], ["o"])],
                   [v("x", T.FLOAT, [1, 3, 6, 6])], [v("o", T.FLOAT, [1, 5, 6, 6])], inits)
    pg = build_probe_graph(model, ["w"], input_shapes={"x": (1, 3, 6, 6)}, taps=[("a", "w"), ("b", "w")])
    (probe,) = pg.probes.values()
    feed = {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32), probe: rng.standard_normal((1, 5, 6, 6)).astype(np.float32)}
    ta, tb, grad = session(pg.model).run([pg.taps[("a", "w")], pg.taps[("b", "w")], pg.grads["w"]], feed)
    total = per_index(inits["w"].astype(np.float64) * grad, 1).sum(1)
    np.testing.assert_allclose(ta + tb, total, rtol=1e-4, atol=1e-5 * np.abs(total).max())
    assert np.abs(ta - total).max() > 1e-3 * np.abs(total).max()  # a share, not the total
