"""Sequential reconstruction and memory-bounded statistics: exact where theory says so, never worse than
one-shot recovery on a fixture, finite with too little data, valid in ONNX Runtime."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES
from onnxprune.score.calibration import collect_statistics
from onnxprune.load.data import Dataset, load_npz
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.score.criteria import score
from onnxprune.couple.plan import Plan
from onnxprune.select.plan import select_uniform
from onnxprune.recover.reconstruction import add_missing_biases, recover, wanted_statistics
from onnxprune.apply.rewrite import apply_plan
from onnxprune.load.runtime import run_dataset, session
from onnxprune.recover.sequential import reconstruct
from onnxprune.check.validate import check_valid


def _mlp(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x [n, 4] -> Gemm (hidden units, no activation) -> Gemm -> y; the hidden units are pruned."""
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(w2.shape[0], np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w2.shape[0]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _setup(model, data):
    working = add_missing_biases(model, data.sample_shapes())
    return working, build_dependency(ModelGraph(working, data.sample_shapes()))


def _error(model, pruned, data) -> float:
    ref = np.concatenate([o.reshape(len(o), -1) for o in run_dataset(session(model), data)], 1)
    out = np.concatenate([o.reshape(len(o), -1) for o in run_dataset(session(pruned), data)], 1)
    return float(np.linalg.norm((out - ref).astype(np.float64)) / np.linalg.norm(ref.astype(np.float64)))


def test_affine_channel_is_recovered_exactly():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((5, 4)).astype(np.float32)
    b1 = rng.standard_normal(5).astype(np.float32)
    w1[4] = 2 * w1[0] - w1[1]            # h4 = 2 h0 - h1 + 0.5: an affine function of kept units
    b1[4] = 2 * b1[0] - b1[1] + 0.5
    model = _mlp(w1, b1, rng.standard_normal((3, 5)).astype(np.float32))
    data = Dataset({"x": rng.standard_normal((64, 1, 4)).astype(np.float32)})
    working, dep = _setup(model, data)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[4]] = True
    plain = apply_plan(Plan(dep, removed))
    solved = apply_plan(Plan(dep, removed), reconstruct(dep, removed, data, ridge=1e-9))
    check_valid(solved, model)
    assert _error(model, plain, data) > 1e-2
    assert _error(model, solved, data) < 1e-5


def test_activations_whose_squares_overflow_float32_are_still_solved(caplog):
    """Deep stacks of untrained weights reach activations of 1e20 (a generated VGG-19's last convs): their
    float32 Gram overflows, and the solve must redo it in float64 rather than give up on the layer."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((5, 4)).astype(np.float32)
    b1 = np.zeros(5, np.float32)
    w1[4] = 2 * w1[0] - w1[1]            # h4 = 2 h0 - h1: a linear function of kept units
    model = _mlp(w1, b1, rng.standard_normal((3, 5)).astype(np.float32))
    x = (1e20 * rng.standard_normal((64, 1, 4))).astype(np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.square(x).sum(dtype=np.float32))  # the premise: float32 sums overflow
    data = Dataset({"x": x})
    working, dep = _setup(model, data)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[4]] = True
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        solved = apply_plan(Plan(dep, removed), reconstruct(dep, removed, data, ridge=1e-9))
    assert "non-finite" not in caplog.text
    assert _error(model, solved, data) < 1e-5


@pytest.mark.parametrize("fixture", ["digits_cnn.onnx"])
def test_sequential_is_no_worse_than_one_shot(fixture):
    model = onnx.load(str(FIXTURES / fixture))
    graph = ModelGraph(model)
    ranks = {n: len(graph.input_shapes[n]) for n in graph.inputs}
    data = load_npz(FIXTURES / "digits_calib.npz", ranks)
    working, dep = _setup(model, data)
    plan = select_uniform(dep, score(dep, "l2"), 0.5)
    stats = collect_statistics(working, data, wanted_statistics(dep, plan.removed, "lstsq"))
    one_shot = apply_plan(plan, recover(dep, plan.removed, stats, "lstsq"))
    sequential = apply_plan(plan, reconstruct(dep, plan.removed, data))
    check_valid(sequential, model)
    assert _error(model, sequential, data) <= _error(model, one_shot, data)


def test_too_few_samples_fall_back_to_ridge(caplog):
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 4)).astype(np.float32)
    model = _mlp(w1, rng.standard_normal(16).astype(np.float32), rng.standard_normal((3, 16)).astype(np.float32))
    data = Dataset({"x": rng.standard_normal((2, 1, 4)).astype(np.float32)})  # 2 rows, 8 kept units
    _, dep = _setup(model, data)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[:8]] = True
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        overrides = reconstruct(dep, removed, data)
    assert overrides and all(np.isfinite(v).all() for v in overrides.values())
    assert any("ridge fallback" in r.getMessage() and "rows" in r.getMessage() for r in caplog.records)
    named = [r.getMessage() for r in caplog.records if "ridge fallback" in r.getMessage()]
    layer = next(n.name for n in dep.graph.nodes if n.op == "Gemm" and n.inputs[0] == "h")
    assert any(layer in m for m in named)


def test_pruned_model_has_the_expected_shapes():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(32)
    _, dep = _setup(model, data)
    plan = select_uniform(dep, score(dep, "l2"), 0.5)
    pruned = apply_plan(plan, reconstruct(dep, plan.removed, data))
    check_valid(pruned, model)
    kept = {slot.tensor: len(idx) for slot, idx in dep.kept_indices(plan.removed).items() if slot.axis == 0}
    weights = {i.name: tuple(i.dims) for i in pruned.graph.initializer}
    assert any(kept.get(name) == shape[0] and kept[name] < dep.slot_size(slot) for name, shape in weights.items()
               for slot in dep.slots if slot.tensor == name and slot.axis == 0)
    for name, shape in weights.items():
        if name in kept:
            assert shape[0] == kept[name]
    out_dense = run_dataset(session(model), data)
    out_pruned = run_dataset(session(pruned), data)
    assert [o.shape for o in out_dense] == [o.shape for o in out_pruned]


def test_bounded_statistics_equal_one_pass():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(40)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    wanted = {(s.tensor, s.axis): True for s in dep.slots if s.tensor not in dep.graph.constants}
    shapes = {t: dep.graph.shape(t) for t, _ in wanted}
    one = collect_statistics(model, data, wanted, shapes=shapes, budget=2 ** 40)
    chunked = collect_statistics(model, data, wanted, shapes=shapes, budget=1)  # one tensor per pass, batch 1
    assert len(wanted) > 1
    for key in wanted:
        a, b = one.get(*key), chunked.get(*key)
        assert a.count == b.count
        np.testing.assert_allclose(a.sum, b.sum, rtol=1e-6, atol=1e-6 * np.abs(a.sum).max())  # float32 kernels
        np.testing.assert_allclose(a.gram, b.gram, rtol=1e-5, atol=1e-6 * np.abs(a.gram).max())  # float32 products


def test_damage_allocation_only_grows_as_the_target_falls():
    from onnxprune.select.damage import group_damage
    from onnxprune.select.sensitivity import select_by_sensitivity

    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(32)
    _, dep = _setup(model, data)
    scores = score(dep, "l2")
    rows = group_damage(dep, data, scores)
    assert rows and all(0.0 <= min(r["cosine"].values()) <= 1.0 + 1e-9 for r in rows)
    previous = np.zeros(dep.num_channels, dtype=bool)
    for share in (0.1, 0.3, 0.5, 0.7, 0.9):
        removed = select_by_sensitivity(dep, rows, scores, share, round_to=1).removed
        assert not (previous & ~removed).any()  # nothing removed at a higher target comes back
        previous = removed
    assert previous.any()


def test_greedy_obs_removes_a_redundant_channel_first():
    from onnxprune.score.criteria import greedy_costs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 5))
    x = np.concatenate([x, x[:, :1] - 2 * x[:, 1:2]], axis=1)  # channel 5 = x0 - 2 x1
    w = rng.standard_normal((6, 3))
    w[5] *= 10                                                  # large weights: magnitude would keep it
    costs = greedy_costs(w, np.cov(x.T), ridge=1e-9)
    assert np.isfinite(costs).all()
    assert costs.argmin() in (0, 1, 5) and costs.min() < 1e-3 * np.sort(costs)[3]


def test_a_layer_too_wide_for_bounded_memory_is_left_sliced(monkeypatch, caplog):
    # VGG-19's 25,088-input Gemm would need a 4.7 GB Gram: past the output solve's MAX_LINEAR_FEATURES
    # and the channel solve's MAX_CHANNEL_SIDE a layer is not re-solved (both lowered here, so the MLP's
    # second Gemm, 16 inputs, is "too wide")
    import onnxprune.recover.sequential as sequential

    rng = np.random.default_rng(5)
    model = _mlp(rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal(16).astype(np.float32),
                 rng.standard_normal((3, 16)).astype(np.float32))
    data = Dataset({"x": rng.standard_normal((64, 1, 4)).astype(np.float32)})
    _, dep = _setup(model, data)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[grp.channels[:4]] = True
    assert "w2" in reconstruct(dep, removed, data)  # re-solved at the normal limit
    monkeypatch.setattr(sequential, "MAX_LINEAR_FEATURES", 8)
    monkeypatch.setattr(sequential, "MAX_CHANNEL_SIDE", 8)
    with caplog.at_level(logging.INFO, logger="onnxprune"):
        overrides = reconstruct(dep, removed, data)
    assert "w2" not in overrides
    assert any("too wide to re-solve" in r.getMessage() for r in caplog.records)
    pruned = apply_plan(Plan(dep, removed), overrides)
    out, = session(pruned).run(None, {"x": data.inputs["x"][:, 0]})
    assert out.shape == (64, 3) and np.isfinite(out).all()
