"""Allocation by damage per MAC (select/allocate.py) and the ridge fallback of one-shot recovery."""

from __future__ import annotations

import logging

import numpy as np
import onnx

from conftest import FIXTURES
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset, load_npz
from onnxprune.recover.reconstruction import add_missing_biases, recover, wanted_statistics
from onnxprune.score.calibration import collect_statistics
from onnxprune.score.criteria import score
from onnxprune.select.allocate import PriceAllocator, hull, output_error
from test_sequential import _mlp


def _digits():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(16)
    working = add_missing_biases(model, data.sample_shapes())
    return data, build_dependency(ModelGraph(working, data.sample_shapes()))


def test_output_error_weighs_scores_as_much_as_boxes():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 320, (8, 4, 50))        # pixel coordinates
    scores = rng.uniform(0, 1, (8, 18, 50))        # class probabilities
    dense = np.concatenate([boxes, scores], 1)
    wrong_scores = dense.copy()
    wrong_scores[:, 4:] = 1 - wrong_scores[:, 4:]  # every class score inverted, boxes exact
    cos = float((dense.ravel() @ wrong_scores.ravel()) / np.linalg.norm(dense) / np.linalg.norm(wrong_scores))
    assert 1 - cos < 1e-3                          # a cosine barely sees it
    assert output_error([dense], [wrong_scores]) > 0.3
    assert output_error([dense], [dense]) == 0.0


def test_hull_prices_rise():
    # (MACs saved, damage, share): the middle point lies above the chord and is dropped
    h = hull([(0.1, 0.5, 0.25), (0.2, 0.6, 0.5), (0.3, 3.0, 0.75)])
    assert [p[2] for p in h] == [0.0, 0.5, 0.75]
    prices = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(h, h[1:])]
    assert prices == sorted(prices)


def test_price_allocation_spares_costly_groups_and_only_grows():
    data, dep = _digits()
    scores = score(dep, "l2")
    groups = [g for g in dep.groups if g.prunable > 1]
    ratios = (0.25, 0.5, 0.75)
    # the first group hurts 100x more per share than the others
    rows = [{"group": g.id, "cosine": {}, "damage": {r: r * (100.0 if i == 0 else 1.0) for r in ratios}}
            for i, g in enumerate(groups)]
    select = PriceAllocator(dep, rows, scores, round_to=1)
    previous = np.zeros(dep.num_channels, dtype=bool)
    for share in (0.05, 0.2, 0.4, 0.6, 0.8, 0.99):
        removed = select(share).removed
        assert not (previous & ~removed).any()  # nothing removed at a higher target comes back
        previous = removed
    mid = select(0.5).removed
    assert mid[groups[1].channels].any() and not mid[groups[0].channels].any()


def test_one_shot_lstsq_with_too_few_samples_falls_back_to_ridge(caplog):
    rng = np.random.default_rng(3)
    model = _mlp(rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal(16).astype(np.float32),
                 rng.standard_normal((3, 16)).astype(np.float32))
    data = Dataset({"x": rng.standard_normal((2, 1, 4)).astype(np.float32)})  # 2 samples, 8 kept units
    working = add_missing_biases(model, data.sample_shapes())
    dep = build_dependency(ModelGraph(working, data.sample_shapes()))
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[:8]] = True
    stats = collect_statistics(working, data, wanted_statistics(dep, removed, "lstsq"))
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        updates = recover(dep, removed, stats, "lstsq")
    assert updates and all(np.isfinite(v).all() for v in updates.values())
    layer = next(n.name for n in dep.graph.nodes if n.op == "Gemm" and n.inputs[0] == "h")
    assert any("ridge fallback" in r.getMessage() and layer in r.getMessage() for r in caplog.records)


def test_price_scope_meets_a_macs_target_and_needs_data():
    import pytest

    from onnxprune import prune
    from onnxprune.errors import BadInputError

    model = str(FIXTURES / "digits_cnn.onnx")
    result = prune(model, target_macs=0.6, calib=str(FIXTURES / "digits_calib.npz"), calib_limit=16, scope="price",
                   bench_rounds=0)
    kept = result.report["after"]["macs"] / result.report["before"]["macs"]
    assert abs(kept - 0.6) <= 0.03
    with pytest.raises(BadInputError, match="scope 'price' needs calibration data"):
        prune(model, target_macs=0.6, scope="price")
