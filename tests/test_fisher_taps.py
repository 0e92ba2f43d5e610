"""fisher's taps: the probe graph's per-channel sum(x * dx) at a linear layer equals the sum of W * dW over
that channel's slice of W (the form fisher computed before taps), on every committed fixture, from one
backward pass that returns both; and the taps skip the weight gradients (the point of them)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from conftest import FIXTURES, analyse
from onnxprune.autodiff.probe import build_probe_graph
from onnxprune.couple.ops import linear_sites
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.runtime import session
from onnxprune.score.criteria import per_index

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
                           taps=[(s.x, s.weight, s.x_axis) for s in sites])
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
    taps = [(s.x, s.weight, s.x_axis) for s in sites]
    tapped = build_probe_graph(model, [], input_shapes=dep.graph.input_shapes, taps=taps)
    weighted = build_probe_graph(model, [s.weight for s in sites], input_shapes=dep.graph.input_shapes)
    assert not tapped.grads and len(tapped.taps) == len(sites)
    assert len(tapped.model.graph.node) < len(weighted.model.graph.node)
    assert {o.name for o in tapped.model.graph.output} == set(tapped.taps.values())
