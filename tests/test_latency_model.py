"""The measured latency model behind --target-latency: every node timed alone at each width (the
rewrite makes the shapes), cached on disk, summed into a prediction for any plan; allocation by
importance per unit of time; the search's aim corrected by measurement. No timing is asserted:
only what the model is built from, how it is reused and how the search uses it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.cli.main import main
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import session
from onnxprune.report import schema
from onnxprune.select.latency import _next_aim
from onnxprune.select.latency_model import GRID, NodeCurve, build_latency_model, single_node_model
from onnxprune.select.plan import select_global, select_uniform

DIGITS = FIXTURES / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def dep():
    return build_dependency(ModelGraph(onnx.load(str(DIGITS))))


def test_every_weighted_node_gets_a_curve_and_predictions_fall_with_width(dep, tmp_path):
    model = build_latency_model(dep, threads=1, cache=tmp_path)
    weighted = {n.index for n in dep.graph.nodes if n.op in ("Conv", "Gemm")}
    assert weighted <= set(model.curves)
    for curve in model.curves.values():
        assert len(curve.work) == len(GRID) and np.all(curve.micros > 0)
    zeros = np.zeros(dep.num_channels)
    kept = [model.kept(select_uniform(dep, zeros, share).removed) for share in GRID]
    assert kept[0] == pytest.approx(1.0)
    assert all(0 < k <= 1.0 for k in kept)
    assert kept[-1] < kept[0]


def test_timings_are_cached_and_a_damaged_cache_is_remeasured(dep, tmp_path):
    first = build_latency_model(dep, threads=1, cache=tmp_path)
    assert first.measured > 0
    again = build_latency_model(dep, threads=1, cache=tmp_path)
    assert again.measured == 0 and again.dense == pytest.approx(first.dense)
    (cache_file,) = tmp_path.glob("*.json")
    cache_file.write_text("{not json")
    assert build_latency_model(dep, threads=1, cache=tmp_path).measured > 0
    json.loads(cache_file.read_text())  # rewritten whole


def test_single_node_models_run_in_onnx_runtime(dep):
    for node in dep.graph.nodes:
        model = single_node_model(dep.graph, node)
        onnx.checker.check_model(model)
        sess = session(model)
        feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                for i in sess.get_inputs()}
        sess.run(None, feed)


def test_global_allocation_prunes_costly_groups_first(dep):
    scores = np.random.default_rng(0).uniform(0.5, 1.5, dep.num_channels)
    prunable = [g.id for g in dep.groups if g.prunable > 1]
    costly = prunable[-1]
    costs = {g: (10.0 if g == costly else 1.0) for g in prunable}
    plain = select_global(dep, scores, 0.3)
    weighted = select_global(dep, scores, 0.3, channel_costs=costs)
    removed = lambda plan, gid: int(plan.removed[dep.groups[gid].channels].sum())  # noqa: E731
    assert removed(weighted, costly) > removed(plain, costly)


def test_the_aim_is_interpolated_inside_its_bracket():
    # measured below the target at aim 0.5, above it at aim 0.8: the next aim lies between them
    aim = _next_aim([(0.5, 0.3), (0.8, 0.7)], 0.5)
    assert 0.5 < aim < 0.8 and aim == pytest.approx(0.65)
    # one miss: scaled by it
    assert _next_aim([(0.5, 0.25)], 0.5) == pytest.approx(0.98)
    assert _next_aim([(0.5, 1.0)], 0.5) == pytest.approx(0.25)


def test_a_noisy_non_monotone_bracket_still_shrinks():
    """DenseNet under load: the plan aimed at 0.6574 measured slower than the one aimed at 0.703; the
    next aim must fall inside the tighter bracket by aims, not repeat the 0.6574 plan."""
    aim = _next_aim([(0.5028, 0.356), (0.703, 0.5353), (0.6574, 0.5749)], 0.5)
    assert 0.5028 < aim < 0.6574


def test_a_latency_target_reports_predicted_and_measured_ratios(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    report = tmp_path / "r.json"
    assert main(["prune", str(DIGITS), "-o", str(tmp_path / "p.onnx"), "--target-latency", "0.6",
                 "--report", str(report), "--bench-rounds", "1", "-q"]) == 0
    document = json.loads(report.read_text())
    schema.check(document)
    latency = document["plan"]["latency"]
    assert latency["target_latency"] == 0.6
    assert 0 < latency["predicted_latency_ratio"] <= 1 and latency["measured_latency_ratio"] > 0
    assert 1 <= len(latency["latency_attempts"]) <= 5
    assert list(tmp_path.glob("latency/*.json"))  # the per-node table was cached


def test_a_cut_deeper_than_the_grid_still_saves_time_and_keeps_the_fixed_cost():
    # measured at 0.25 / 0.5 / 1.0 of the work: 40 us fixed + 100 us per unit of work
    curve = NodeCurve(np.array([0.25, 0.5, 1.0]), np.array([65.0, 90.0, 140.0]))
    assert curve.at(0.5) == pytest.approx(90.0) and curve.at(0.75) == pytest.approx(115.0)
    assert curve.at(0.1) == pytest.approx(50.0)  # the lowest segment extended: not held at 65
    assert curve.at(0.0) == pytest.approx(40.0)  # the fixed cost stays
    # a curve steeper than proportional never extends below proportional time (nor below zero)
    steep = NodeCurve(np.array([0.25, 0.5]), np.array([10.0, 100.0]))
    assert steep.at(0.1) == pytest.approx(4.0) and steep.at(0.0) == 0.0
    # flat below the grid where nothing is known: one point, or a flat lowest segment
    assert NodeCurve(np.array([1.0]), np.array([7.0])).at(0.2) == 7.0
    assert NodeCurve(np.array([0.25, 1.0]), np.array([30.0, 30.0])).at(0.1) == pytest.approx(30.0)
