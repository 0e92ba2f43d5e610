"""fisher_joint: the joint first-order damage of removing a set of channels matches the measured output
change of a linear model (cross terms included, which the additive fisher sum misses), a duplicated
channel is not removed together with its copy, and the pruned model is valid in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.score.criteria import COMPARABLE, score
from onnxprune.score.joint import greedy_order, pair_damage, probe_rows
from onnxprune.select.plan import select_global

# hidden channel scales: 0 and 1 are copies of one feature (each cheap alone, together 4x one),
# 2-5 independent and a bit dearer alone, 6-7 important
SCALES = np.array([1.0, 1.0, 1.3, 1.3, 1.3, 1.3, 3.0, 3.0])


def _linear(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """x [n, 8] -> Gemm (no bias) -> h [n, 8] -> Gemm -> y [n, 2]; linear, so first order is exact."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    w1 = basis.copy()
    w1[1] = w1[0]  # channel 1 computes channel 0's feature
    w2 = np.outer([1.0, 0.5], SCALES)  # every channel feeds the outputs the same way, scaled
    inits = [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Gemm", ["h", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), w1, w2


def _data(n: int, seed: int = 1) -> Dataset:
    return Dataset({"x": np.random.default_rng(seed).standard_normal((n, 1, 8)).astype(np.float32)})


def _hidden(dep):
    return next(grp for grp in dep.groups if grp.size == 8)


def test_joint_damage_matches_the_measured_output_change():
    model, w1, w2 = _linear()
    data = _data(256)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    cols = _hidden(dep).channels
    rows = probe_rows(dep, data)[:, cols]
    assert rows.shape == (512, 8)  # 256 samples x 2 probes
    g = pair_damage(rows, "signed")
    x = data.inputs["x"].reshape(-1, 8).astype(np.float64)
    h = x @ w1.T
    y = h @ w2.T
    std = y.std(0)
    for subset in ([0], [0, 1], [2, 3], [0, 2, 6]):
        measured = float(np.mean(np.sum(((h[:, subset] @ w2[:, subset].T) / std) ** 2, 1)))
        joint = float(g[np.ix_(subset, subset)].sum())
        additive = float(np.diag(g)[subset].sum())
        assert 0.8 < joint / measured < 1.25, (subset, joint, measured)
        if subset == [0, 1]:  # the copies: removing both does 4x the damage of one, the additive sum says 2x
            assert 1.7 < measured / additive < 2.3


def test_greedy_order_keeps_one_of_two_copies():
    g = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.5]])
    order, marginal = greedy_order(g)
    assert order[0] in (0, 1) and order[1] == 2  # after one copy, the other costs 1 + 2 x 1 = 3 > 1.5
    np.testing.assert_allclose(marginal, [1.0, 1.5, 3.0])


def test_fisher_joint_removes_one_copy_where_fisher_removes_both():
    model, _, _ = _linear()
    data = _data(128)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    cols = _hidden(dep).channels
    assert "fisher_joint" in COMPARABLE
    removed = {}
    for name in ("fisher", "fisher_joint"):
        plan = select_global(dep, score(dep, name, data=data), 2 / 8, normalize=False)
        removed[name] = set(np.flatnonzero(plan.removed[cols]).tolist())
    assert removed["fisher"] == {0, 1}
    assert len(removed["fisher_joint"] & {0, 1}) == 1 and len(removed["fisher_joint"] - {0, 1, 6, 7}) == 1


def test_fisher_joint_pruned_model_is_valid_in_ort():
    model, _, _ = _linear()
    data = _data(32)
    result = prune(model, 2 / 8, calib=data, criterion="fisher_joint", scope="global", recover="sequential",
                   round_to=1, bench_rounds=0)
    onnx.checker.check_model(result.model)
    w1 = next(numpy_helper.to_array(i) for i in result.model.graph.initializer if i.name == "w1")
    assert w1.shape == (6, 8)
    x = data.inputs["x"][:4].reshape(4, 8)
    out = session(result.model).run(None, {"x": x})[0]
    dense = session(model).run(None, {"x": x})[0]
    assert out.shape == dense.shape and np.all(np.isfinite(out))


def test_measured_trials_zero_the_channels_and_match_numpy():
    from onnxprune.score.measured import _Trials
    model, w1, w2 = _linear()
    data = _data(16)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    cols = _hidden(dep).channels
    trials = _Trials(dep, data, samples=8)
    x = data.inputs["x"][:8].reshape(-1, 8).astype(np.float64)
    h = x @ w1.T
    std = (data.inputs["x"].reshape(-1, 8).astype(np.float64) @ w1.T @ w2.T).std(0)
    for subset in ([0], [0, 1], [2, 6]):
        expected = float(np.mean(np.sum(((h[:, subset] @ w2[:, subset].T) / std) ** 2, 1)))
        got = trials.damage(trials.group_sites(cols), cols[subset])
        np.testing.assert_allclose(got, expected, rtol=1e-3)
    assert trials.damage(trials.group_sites(cols), cols[:0]) == 0.0  # nothing removed: the dense outputs


def test_corrected_marginals_meet_the_measured_points():
    from onnxprune.score.measured import corrected
    marginal = np.array([1.0, 1.0, 2.0, 4.0])
    out = corrected(marginal, [(2, 6.0), (4, 8.0)])  # first order: 2 then 8; measured 6 then 8
    np.testing.assert_allclose(np.cumsum(out)[[1, 3]], [6.0, 8.0])
    np.testing.assert_allclose(out[:2], [3.0, 3.0])  # before the first point, its ratio (3x)
