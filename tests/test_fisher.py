"""fisher: output-probe gradients match finite differences, the criterion keeps the channels an output
depends on (however small their activations) and drops those no output reads, and the pruned model is
valid in ONNX Runtime with exact shapes."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import prune
from onnxprune.autodiff.probe import build_probe_graph
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.score.criteria import COMPARABLE, score
from onnxprune.score.fisher import reorder_within_groups
from onnxprune.select.plan import select_global


def _two_outputs(seed: int = 0) -> onnx.ModelProto:
    """x [n, 6] -> Gemm -> Relu -> h [n, 12] -> box = Gemm(h) [n, 4], score = Sigmoid(Gemm(h)) [n, 2].
    Hidden units 0-3 are tiny (1e-3) and alone drive `score`; 4-7 are large and drive `box` (scale 100,
    like pixel coordinates); 8-11 are large and read by nothing."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((12, 6)).astype(np.float32)
    w1[:4] *= 1e-3
    b1 = np.abs(rng.standard_normal(12)).astype(np.float32) * np.r_[np.full(4, 1e-3), np.ones(8)].astype(np.float32)
    w_box = np.zeros((4, 12), np.float32)
    w_box[:, 4:8] = 100 * rng.standard_normal((4, 4))
    w_score = np.zeros((2, 12), np.float32)
    w_score[:, 0:4] = 1e3 * rng.standard_normal((2, 4))
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w_box, "wb"), (w_score, "ws"),
                                                          (np.zeros(4, np.float32), "bb"), (np.zeros(2, np.float32), "bs"))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1), helper.make_node("Relu", ["z"], ["h"]),
             helper.make_node("Gemm", ["h", "wb", "bb"], ["box"], transB=1),
             helper.make_node("Gemm", ["h", "ws", "bs"], ["logit"], transB=1),
             helper.make_node("Sigmoid", ["logit"], ["score"])]
    outs = [helper.make_tensor_value_info("box", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 2])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _data(n: int = 16, seed: int = 1) -> Dataset:
    return Dataset({"x": np.random.default_rng(seed).standard_normal((n, 1, 6)).astype(np.float32)})


def _conv_model(seed: int = 0) -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> Conv 3->6 -> Relu -> Conv 6->4 -> Sigmoid -> y; a second output is the Relu's mean."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.3, rng.standard_normal((4, 6, 3, 3)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["c2"], ["y"]),
             helper.make_node("ReduceMean", ["r1"], ["m"], keepdims=0)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _probe_loss(model: onnx.ModelProto, x: np.ndarray, probes: dict[str, np.ndarray]) -> float:
    outs = dict(zip([o.name for o in model.graph.output], session(model).run(None, {"x": x})))
    return float(sum(np.sum(outs[k].astype(np.float64) * v) for k, v in probes.items()))


def test_probe_gradients_match_finite_differences():
    model = _conv_model()
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    rng = np.random.default_rng(3)
    probes = {"y": rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "m": np.asarray(rng.standard_normal(), np.float32)}
    pg = build_probe_graph(model, ["w2", "w1"])
    assert set(pg.grads) == {"w1", "w2"} and set(pg.probes) == {"y", "m"}
    grads = dict(zip(pg.grads, session(pg.model).run(list(pg.grads.values()), {"x": x, **{pg.probes[k]: v for k, v in probes.items()}})))
    for name, idx in (("w2", (1, 2, 0, 1)), ("w1", (3, 1, 1, 1)), ("w1", (0, 2, 2, 0))):
        eps = 1e-2
        bumped = []
        for sign in (1, -1):
            m = onnx.ModelProto()
            m.CopyFrom(model)
            init = next(i for i in m.graph.initializer if i.name == name)
            w = numpy_helper.to_array(init).astype(np.float64)
            w[idx] += sign * eps
            init.CopyFrom(numpy_helper.from_array(w.astype(np.float32), name))
            bumped.append(_probe_loss(m, x, probes))
        fd = (bumped[0] - bumped[1]) / (2 * eps)
        assert abs(grads[name][idx] - fd) <= 2e-2 * max(1.0, abs(fd)), (name, idx, grads[name][idx], fd)


def test_fisher_keeps_the_channels_an_output_needs():
    model, data = _two_outputs(), _data()
    g = ModelGraph(model, data.sample_shapes())
    dep = build_dependency(g)
    scores = score(dep, "fisher", data=data)
    hidden = next(grp for grp in dep.groups if grp.size == 12)
    s = scores[hidden.channels]
    assert s[8:].max() < 1e-6 * min(s[:4].min(), s[4:8].min())  # read by nothing: nothing lost
    # standardised per output row, the tiny score channels weigh like the pixel-scale box channels
    assert 0.01 < s[:4].mean() / s[4:8].mean() < 100
    assert "fisher" in COMPARABLE
    plan = select_global(dep, scores, 4 / 12, normalize=False)
    assert sorted(np.flatnonzero(plan.removed[hidden.channels])) == [8, 9, 10, 11]
    l2 = score(dep, "l2")
    l2_plan = select_global(dep, l2, 4 / 12)  # the data-free ranking drops the tiny score channels instead
    assert set(np.flatnonzero(l2_plan.removed[hidden.channels])) & {0, 1, 2, 3}


def test_fisher_pruned_model_is_valid_with_exact_shapes():
    model, data = _two_outputs(), _data()
    result = prune(model, 4 / 12, calib=data, criterion="fisher", scope="global", recover="sequential", round_to=1,
                   bench_rounds=0)
    pruned = result.model
    onnx.checker.check_model(pruned)
    w1 = next(numpy_helper.to_array(i) for i in pruned.graph.initializer if i.name == "w1")
    assert w1.shape == (8, 6)
    x = data.inputs["x"][:4].reshape(4, 6)
    dense, out = session(model).run(None, {"x": x}), session(pruned).run(None, {"x": x})
    for d, o in zip(dense, out):
        assert d.shape == o.shape
        np.testing.assert_allclose(o, d, rtol=1e-3, atol=1e-4)  # only unread channels went


def test_fisher_recon_keeps_fisher_counts_and_reconstruction_order():
    model, data = _two_outputs(), _data()
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    values = np.arange(dep.num_channels, dtype=float)
    order_by = -values
    out = reorder_within_groups(dep, values, order_by)
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        assert sorted(out[free]) == sorted(values[free])
        if len(free) > 1:
            assert np.all(np.diff(out[free]) <= 0)  # ranked by order_by (descending values)


def test_fisher_falls_back_when_no_output_can_be_probed(caplog):
    """An integer-only output (ArgMax) has no gradient: fisher warns and ranks by reconstruction, no crash."""
    model = _two_outputs()
    model.graph.node.append(helper.make_node("ArgMax", ["score"], ["label"], axis=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["n", 1]))
    data = _data()
    with caplog.at_level(logging.WARNING, logger="onnxprune"):  # an earlier test may have quietened it
        result = prune(model, 0.25, calib=data, criterion="fisher", scope="global", recover="sequential",
                       round_to=1, bench_rounds=0)
    assert "no output gradients" in caplog.text
    onnx.checker.check_model(result.model)


def _quantized_two_outputs() -> onnx.ModelProto:
    """_two_outputs with its weights stored as int8 behind DequantizeLinear (per-tensor scales)."""
    model = _two_outputs()
    graph = model.graph
    for name in ("w1", "wb", "ws"):
        init = next(i for i in graph.initializer if i.name == name)
        w = numpy_helper.to_array(init)
        scale = np.float32(max(float(np.abs(w).max()), 1e-12) / 127)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{name}_q"),
                                  numpy_helper.from_array(scale, f"{name}_s"),
                                  numpy_helper.from_array(np.int8(0), f"{name}_z")])
        graph.node.insert(0, helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name]))
    return model


def test_fisher_on_quantized_weights_falls_back_to_reconstruction(caplog, monkeypatch):
    """Weights left as DequantizeLinear outputs (not lifted to floats: load/qdq_lift.py) get no gradient,
    so fisher ranks by reconstruction with a warning (it used to score channels by their biases alone, or
    all alike: orinet_qdq at 0.8 of the MACs lost 71 points)."""
    import onnxprune.stages as stages

    monkeypatch.setattr(stages, "lift", lambda model: (model, {}))
    model = _quantized_two_outputs()
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = prune(model, 0.25, calib=_data(), criterion="fisher", scope="global", recover="none",
                       round_to=1, bench_rounds=0, max_layer_ratio=0.5)
    assert "no output gradients" in caplog.text
    same = prune(model, 0.25, calib=_data(), criterion="reconstruction", scope="global", recover="none",
                 round_to=1, bench_rounds=0, max_layer_ratio=0.5)
    assert result.plan.removed.any() and (result.plan.removed == same.plan.removed).all()


def test_fisher_scores_lifted_qdq_weights(caplog):
    """Lifted to floats, a QDQ model's weights get gradients: fisher scores them, no fallback, and the
    pruned model keeps its weights int8 behind DequantizeLinear."""
    model = _quantized_two_outputs()
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        result = prune(model, 0.25, calib=_data(), criterion="fisher", scope="global", recover="none",
                       round_to=1, bench_rounds=0, max_layer_ratio=0.5)
    assert "no output gradients" not in caplog.text
    assert result.plan.removed.any()
    ints = {i.name for i in result.model.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert {f"{name}_q" for name in ("w1", "wb", "ws")} <= ints


def test_an_output_constant_on_the_data_leaves_the_scores_finite():
    """An output that does not vary over the calibration data (here `score`: _two_outputs with its tiny
    score-driving weights zeroed, as int8 quantization does) ranks nothing. It used to be probed at
    1 / 1e-36, and the overflowing gradients turned every channel's score into NaN."""
    model = _two_outputs()
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    value = numpy_helper.to_array(w1).copy()
    value[:4] = 0.0  # the score units now output their bias alone, whatever x is
    w1.CopyFrom(numpy_helper.from_array(value, "w1"))
    data = _data()
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    scores = score(dep, "fisher", data=data)
    assert np.all(np.isfinite(scores)) and scores.max() < 1e6  # before: 9e70 in most channels
    hidden = scores[:12]  # the hidden layer's group: units 4-7 drive `box`, 8-11 are read by nothing
    assert hidden[4:8].min() > hidden[8:12].max()
