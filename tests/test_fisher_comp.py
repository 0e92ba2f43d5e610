"""fisher_comp: fisher times the share of each channel that its consumers' re-solve cannot recover. Exact
copies are free to remove one at a time (u ~ 0) however much the outputs need them; a channel the others
do not predict keeps fisher's score; the criterion prunes real fixtures into valid models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, analyse, oracle_gap
from onnxprune import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset, load_npz
from onnxprune.score.calibration import collect_statistics
from onnxprune.score.criteria import COMPARABLE, score, wanted_statistics
from onnxprune.score.fisher_comp import compensable_shares, ordered_shares, ordered_unexplained, unexplained
from onnxprune.select.plan import select_global


def _copies_model() -> onnx.ModelProto:
    """x [n, 4] -> Gemm -> h [n, 6] -> Gemm -> y [n, 3]. Hidden units 0 and 1 are the same unit
    (x0 + x1) and drive y strongly; unit 5 is 2 * x3 alone; units 2-4 mix x0-x2."""
    w1 = np.zeros((6, 4), np.float32)
    w1[0, :2] = w1[1, :2] = 1.0
    w1[2:5, :3] = np.random.default_rng(0).standard_normal((3, 3))
    w1[5, 3] = 2.0
    w2 = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    w2[:, :2] *= 10.0
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (np.zeros(6, np.float32), "b1"),
                                                          (w2, "w2"), (np.zeros(3, np.float32), "b2"))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "copies", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _orthogonal_data(n: int = 64) -> Dataset:
    """Inputs whose four columns have zero mean and are exactly orthogonal over the n samples: x3 (and so
    hidden unit 5) is uncorrelated with everything else on the data."""
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((n, 5)))
    x = q[:, 1:] - q[:, 1:].mean(0)  # still orthogonal: every column is orthogonal to q[:, 0]'s constant part
    x, _ = np.linalg.qr(x - x.mean(0))
    x = (x - x.mean(0)) * np.sqrt(n)
    return Dataset({"x": x.astype(np.float32)[:, None, :]})


def _scored(name: str):
    model, data = _copies_model(), _orthogonal_data()
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    stats = collect_statistics(model, data, wanted_statistics(dep, name))
    return dep, stats, data


def test_unexplained_share_of_copies_and_of_an_independent_channel():
    cov = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    u = unexplained(cov.copy(), np.diag(cov))
    assert u[0] < 0.01 and u[1] < 0.01  # each copy is the other
    assert np.isclose(u[2], 1.0)
    # a channel with a large mean: the bias takes the mean, only the spread is left to lose
    assert np.isclose(unexplained(np.array([[1.0]]), np.array([10.0]))[0], 0.1)
    # in-sample fits flatter: over 4 rows per input the share counts (1 - 1/4)^-2 times more
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    assert np.isclose(unexplained(cov.copy(), np.ones(2), rows=8)[0], unexplained(cov.copy(), np.ones(2))[0] / 0.75 ** 2)
    # no more rows than inputs (copies included): nothing measured, fisher stands
    assert np.allclose(unexplained(np.array([[1.0, 1.0], [1.0, 1.0]]), np.ones(2), rows=2), 1.0)


def test_copies_lose_their_fisher_score_and_an_independent_channel_keeps_it():
    dep, stats, data = _scored("fisher_comp")
    (group,) = [g for g in dep.groups if len(g.channels) == 6]
    ch = group.channels
    fisher = score(dep, "fisher", stats=stats, data=data)
    comp = score(dep, "fisher_comp", stats=stats, data=data)
    u = compensable_shares(dep, stats)
    assert u[ch[0]] < 0.01 and u[ch[1]] < 0.01
    assert fisher[ch[0]] > np.median(fisher[ch])  # the outputs need the copied unit ...
    assert comp[ch[0]] < comp[ch[5]] and comp[ch[1]] < comp[ch[5]]  # ... but either copy alone can go
    assert np.isclose(u[ch[5]], 1.0, atol=1e-4)
    assert np.isclose(comp[ch[5]], fisher[ch[5]], rtol=1e-4)
    assert "fisher_comp" in COMPARABLE and "fisher_logit_comp" in COMPARABLE


def test_fisher_comp_plan_on_digits_is_valid_and_matches_the_oracle():
    model, dep = analyse(FIXTURES / "digits_cnn.onnx")
    data = load_npz(FIXTURES / "digits_calib.npz", {"input": 4}).take(32)
    stats = collect_statistics(model, data, wanted_statistics(dep, "fisher_comp"))
    scores = score(dep, "fisher_comp", stats=stats, data=data)
    assert np.isfinite(scores).all()
    u = compensable_shares(dep, stats)
    assert ((u >= 0) & (u <= 1)).all() and (u < 0.999).any()  # some channel is partly predictable
    plan = select_global(dep, scores, 0.4, max_layer_ratio=0.5, normalize=False)
    assert plan.removed.any()
    assert oracle_gap(model, plan) < 1e-4


@pytest.mark.parametrize("deep, mild", [("fisher_comp", "fisher_logit_comp"),
                                         ("fisher_comp_ordered", "fisher_logit_comp_ordered")])
def test_prune_with_fisher_comp_end_to_end(deep, mild):
    r = prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.5, calib=str(FIXTURES / "digits_calib.npz"),
              bench_rounds=0, criterion=deep)
    opts = r.report["options"]
    assert opts["criterion"] == deep and opts["max_layer_ratio"] == 0.5
    assert opts["calib_views"] == 4  # the views fisher gets at deep targets
    assert r.report["fidelity"]["top1_agreement"] > 0.9
    r = prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.8, calib=str(FIXTURES / "digits_calib.npz"),
              bench_rounds=0, criterion=mild)
    assert r.report["options"]["criterion"] == mild and r.report["options"]["max_layer_ratio"] == 0.5
    assert r.report["fidelity"]["top1_agreement"] > 0.9


def test_ordered_share_frees_only_the_later_copy():
    cov = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    u = ordered_unexplained(cov.copy(), np.diag(cov), order=np.array([1, 2, 0]))
    assert u[0] < 0.01  # channel 1 ranks above it and is its copy
    assert np.isclose(u[1], 1.0) and np.isclose(u[2], 1.0)
    # the last in the order reads every other channel: the one-at-a-time share
    cov = np.array([[2.0, 0.7, 0.3], [0.7, 1.0, 0.2], [0.3, 0.2, 1.5]])
    assert np.isclose(ordered_unexplained(cov.copy(), np.diag(cov), np.array([1, 2, 0]))[0],
                      unexplained(cov.copy(), np.diag(cov))[0])


def test_ordered_criterion_keeps_the_copy_fisher_ranks_higher():
    dep, stats, data = _scored("fisher_comp_ordered")
    (group,) = [g for g in dep.groups if len(g.channels) == 6]
    ch = group.channels
    fisher = score(dep, "fisher", stats=stats, data=data)
    u = ordered_shares(dep, stats, fisher)
    first, second = (ch[0], ch[1]) if fisher[ch[0]] >= fisher[ch[1]] else (ch[1], ch[0])
    assert u[second] < 0.01 and u[first] > 0.5
    assert np.isclose(score(dep, "fisher_comp_ordered", stats=stats, data=data)[ch[5]], fisher[ch[5]], rtol=1e-4)
