"""LRN written as a band Conv (graph/lrn_band.py): the same outputs as ONNX Runtime's LRN, channels
that pruning can remove exactly (the zero-channel oracle), and the rewrite made only for a latency
target, which is then measured against the user's model. No timing is asserted."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import oracle_gap, random_plan
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.ops import Slot
from onnxprune.graph.lrn_band import band_weight, lrn_as_band
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import session


def lrn_net(size: int = 5, beta: float = 0.75, bias: float = 1.0, alpha: float = 0.02, ir: int = 8) -> onnx.ModelProto:
    """conv (6 channels) -> relu -> LRN -> conv: the LRN's channels are the first conv's outputs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 2, "w1"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((4, 6, 1, 1)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("LRN", ["r"], ["n"], size=size, alpha=alpha, beta=beta, bias=bias, name="lrn"),
             helper.make_node("Conv", ["n", "w2"], ["out"], name="conv2")]
    graph = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 7, 7])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 7, 7])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=ir)


def outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return session(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("size,beta,bias", [(5, 0.75, 1.0), (3, 0.75, 2.0), (3, 0.5, 1.0), (7, 1.3, 0.5)])  # ORT: odd sizes only
def test_band_conv_computes_what_onnx_runtime_lrn_computes(size, beta, bias):
    model = lrn_net(size, beta, bias)
    band, count = lrn_as_band(model)
    assert count == 1 and not any(n.op_type == "LRN" for n in band.graph.node)
    onnx.checker.check_model(band)
    x = np.random.default_rng(1).standard_normal((1, 3, 7, 7)).astype(np.float32) * 3
    np.testing.assert_allclose(outputs(band, x), outputs(model, x), rtol=1e-5, atol=1e-5)


def test_band_follows_onnx_window_floor_before_ceil_after():
    weight = band_weight(5, 4, alpha=4.0, spatial=2)[:, :, 0, 0]  # alpha/size = 1: the band itself
    assert weight.shape == (5, 5)
    assert weight[2].tolist() == [0, 1, 1, 1, 1]  # channel 2 sums 1 before, 2 after (size 4)
    assert weight[0].tolist() == [1, 1, 1, 0, 0]


def test_ir3_model_lists_the_new_weights_as_inputs():
    band, _ = lrn_as_band(lrn_net(ir=3))
    onnx.checker.check_model(band)
    listed = {i.name for i in band.graph.input}
    assert all(t.name in listed for t in band.graph.initializer)


def test_model_without_lrn_is_returned_unchanged():
    band, _ = lrn_as_band(lrn_net())
    again, count = lrn_as_band(band)
    assert count == 0 and again is band


def test_band_channels_are_prunable_and_pruning_them_is_exact():
    dense = build_dependency(ModelGraph(lrn_net()))
    band, _ = lrn_as_band(lrn_net())
    dep = build_dependency(ModelGraph(band))
    slot = lambda d: next(g for g in d.groups if Slot("c", 1) in g.slots)  # noqa: E731
    assert slot(dense).prunable == 0  # ORT's LRN: a barrier
    assert slot(dep).prunable == 6  # the band Conv: conv1's outputs prune through it
    for seed in (0, 1, 2):
        assert oracle_gap(band, random_plan(dep, 0.5, seed)) < 1e-5


def test_latency_target_rewrites_lrn_and_measures_against_the_users_model(tmp_path, monkeypatch):
    import onnxprune
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    model = lrn_net()
    result = onnxprune.prune(model, criterion="l2", scope="global", recover="none", bench_rounds=0,
                             target_latency=0.9)
    assert not any(n.op_type == "LRN" for n in result.model.graph.node)
    assert result.report["plan"]["latency"]["measured_latency_ratio"] > 0
    by_macs = onnxprune.prune(model, criterion="l2", scope="global", recover="none", bench_rounds=0, target_macs=0.6)
    assert any(n.op_type == "LRN" for n in by_macs.model.graph.node)  # a MACs target leaves LRN as it is


def test_aims_of_a_faster_rewritten_model_may_reach_its_whole_width():
    from onnxprune.select.latency import _next_aim
    assert _next_aim([(0.9, 0.3)], 0.5) == pytest.approx(0.98)  # as before: the user's own model
    assert _next_aim([(0.9, 0.3)], 0.5, scale=0.6) == pytest.approx(0.995)  # the rewrite alone nearly meets it
    assert _next_aim([(0.5, 0.6)], 0.5, scale=0.6) == pytest.approx(0.5 * 0.5 / 0.6)

