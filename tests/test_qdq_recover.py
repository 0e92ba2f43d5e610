"""Data-aware pruning and recovery of QDQ models (load/qdq_lift.py, apply/qdq_lower.py).

The fixture is the digits CNN quantized here by ONNX Runtime's own quantize_static (QDQ, per-channel
int8 weights, int32 biases at input scale x weight scale), the way a deployment pipeline hands it over.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import onnxprune
import onnxprune.stages as stages
from onnxprune.apply.qdq_lower import lower
from onnxprune.check.oracle import zero_removed
from onnxprune.load.qdq_lift import lift
from onnxprune.options import options_from_keywords

from conftest import fixture_path

LEVEL = 0.6
RNG_W = np.random.default_rng(0)


def _quantized(float_model: onnx.ModelProto, path, **options) -> onnx.ModelProto:
    """`float_model` through ONNX Runtime's quantize_static (QDQ, per channel), calibrated on 32 digits."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    x = np.load(fixture_path("digits_calib.npz"))["input"][:32]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"input": x[i:i + 1]} for i in range(len(x)))

        def get_next(self):
            return next(self.it, None)

    onnx.save(float_model, str(path.with_suffix(".float.onnx")))
    quantize_static(str(path.with_suffix(".float.onnx")), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, **options)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def qdq(tmp_path_factory) -> onnx.ModelProto:
    return _quantized(onnx.load(str(fixture_path("digits_cnn.onnx"))), tmp_path_factory.mktemp("qdq") / "digits_qdq.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=np.load(fixture_path("digits_calib.npz"))["input"][:64])
    return str(path)


def _run(model: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def _test_inputs() -> np.ndarray:
    return np.load(fixture_path("digits_test.npz"))["input"][:200]


def _error(model: onnx.ModelProto, dense: onnx.ModelProto) -> float:
    x = _test_inputs()
    a, b = _run(dense, x), _run(model, x)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _histogram(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _constant_dqs(model: onnx.ModelProto):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return inits, [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


@pytest.fixture(scope="module")
def pruned(qdq, calib) -> onnx.ModelProto:
    return onnxprune.prune(qdq, target_macs=LEVEL, calib=calib, bench_rounds=0).model


def test_lift_then_lower_is_bit_for_bit(qdq):
    lifted_model, lifted = lift(qdq)
    assert len(lifted) == 8  # 4 weights, 4 biases
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in lifted for n in lifted_model.graph.node)
    back = lower(lifted_model, lifted, lambda tensor, axis: None)
    before = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and np.array_equal(after[name], value), name
    assert _histogram(back) == _histogram(qdq)
    x = _test_inputs()[:8]
    assert np.array_equal(_run(back, x), _run(qdq, x))


def test_lift_leaves_the_input_model_untouched(qdq):
    before = qdq.SerializeToString()
    lift(qdq)
    assert qdq.SerializeToString() == before


def test_pruned_qdq_model_is_closer_with_lift(qdq, calib, pruned, monkeypatch):
    with_lift = _error(pruned, qdq)
    monkeypatch.setattr(stages, "lift", lambda model: (model, {}))  # main's behaviour: weights unseen
    without = _error(onnxprune.prune(qdq, target_macs=LEVEL, calib=calib, bench_rounds=0).model, qdq)
    assert with_lift < 0.8 * without, (with_lift, without)  # measured: 0.10 against 1.28


def test_pruned_model_stays_qdq(qdq, pruned):
    assert _histogram(pruned) == _histogram(qdq)  # no Q/DQ node lost or added
    inits, dqs = _constant_dqs(pruned)
    _, dense_dqs = _constant_dqs(qdq)
    assert len(dqs) == len(dense_dqs) == 8
    smaller = 0
    for node in dqs:
        q, scale = inits[node.input[0]], inits[node.input[1]]
        assert q.dtype in (np.int8, np.int32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        assert scale.ndim == 1 and scale.shape[0] == q.shape[axis] > 1  # still per channel, on the kept channels
        smaller += q.shape[axis] < numpy_helper.to_array(
            next(t for t in qdq.graph.initializer if t.name == node.input[0])).shape[axis]
    assert smaller > 0  # something was pruned
    assert sum(q.dtype == np.int8 for q in (inits[n.input[0]] for n in dqs)) == 4


def _bias_checks(model: onnx.ModelProto) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bias scale, input scale x weight scale) of every quantized Conv/Gemm."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            x, w, b = (dq[t] for t in node.input[:3])
            out.append((inits[b.input[1]], (inits[x.input[1]] * inits[w.input[1]]).astype(np.float32)))
    return out


def test_bias_scale_invariant_holds_exactly(qdq, pruned):
    assert all(np.array_equal(b, want) for b, want in _bias_checks(qdq))  # ORT wrote it so
    checks = _bias_checks(pruned)
    assert len(checks) == 4
    assert all(np.array_equal(b, want) for b, want in checks)


def test_grown_weights_grow_their_scale_and_their_bias_scale(qdq):
    lifted_model, lifted = lift(qdq)
    weight = next(n for n in lifted if lifted[n].dtype == np.int8 and lifted[n].axis == 0)
    t = next(t for t in lifted_model.graph.initializer if t.name == weight)
    value = numpy_helper.to_array(t).copy()
    value[0] *= 3.0  # channel 0 now needs three times its integer range
    t.CopyFrom(numpy_helper.from_array(value, weight))
    back = lower(lifted_model, lifted, lambda tensor, axis: None)
    inits, dqs = _constant_dqs(back)
    node = next(n for n in dqs if n.output[0] == weight)
    q, scale = inits[node.input[0]], inits[node.input[1]]
    old = lifted[weight].scale
    assert scale[0] > old[0] * 2.9 and np.array_equal(scale[1:], old[1:])
    assert np.abs(q.astype(np.int32)).max() <= 127
    assert np.allclose(q[0] * scale[0], value[0], atol=scale[0] / 2 + 1e-7)
    assert all(np.array_equal(b, want) for b, want in _bias_checks(back))  # the bias scale grew with it


def test_zero_channel_oracle_without_recovery(qdq, calib):
    options, _ = options_from_keywords({"target_macs": LEVEL, "recover": "none", "bench_rounds": 0})
    prep = stages.prepare(qdq, options, calib)
    plan = stages.choose_plan(prep)
    pruned = stages.apply_and_recover(prep, plan)
    zeroed = zero_removed(prep.dep, plan.removed)  # the lifted dense model, removed channels zeroed
    x = _test_inputs()[:16]
    a, b = _run(zeroed, x, optimize=False), _run(pruned, x, optimize=False)  # both as float with fake quant
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(a).max()))


def _dq_model(scale_from_input: bool) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 1, 2, 2), "w_q")
    inits = [w]
    if scale_from_input:
        inputs = [helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [])]
    else:
        inputs = []
        inits.append(numpy_helper.from_array(np.float32(0.1), "s"))
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "s"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4]),
                                           *inputs],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dq_with_a_non_constant_scale_is_left_alone():
    model = _dq_model(scale_from_input=True)
    before = model.SerializeToString()
    same, lifted = lift(model)
    assert lifted == {} and same is model and model.SerializeToString() == before


def test_per_tensor_scale_round_trips():
    model = _dq_model(scale_from_input=False)
    lifted_model, lifted = lift(model)
    assert list(lifted) == ["w"] and lifted["w"].axis is None
    back = lower(lifted_model, lifted, lambda tensor, axis: None)
    w = next(t for t in back.graph.initializer if t.name == "w_q")
    assert np.array_equal(numpy_helper.to_array(w), np.arange(-8, 8, dtype=np.int8).reshape(4, 1, 2, 2))


def test_integers_at_the_type_minimum_round_trip():
    """A quantizer that used -128 (full int8 range, zero point 0): lowering keeps it, scale unchanged."""
    model = _dq_model(scale_from_input=False)
    w = next(t for t in model.graph.initializer if t.name == "w_q")
    values = np.array([-128, 127, 5, -3] * 4, dtype=np.int8).reshape(4, 1, 2, 2)
    w.CopyFrom(numpy_helper.from_array(values, "w_q"))
    lifted_model, lifted = lift(model)
    back = lower(lifted_model, lifted, lambda tensor, axis: None)
    inits = {t.name: numpy_helper.to_array(t) for t in back.graph.initializer}
    assert np.array_equal(inits["w_q"], values) and inits["s"] == np.float32(0.1)


def test_reduce_range_weights_stay_in_seven_bits(calib, tmp_path):
    """ORT's reduce_range (the Quantize pass's AVX2 default) keeps int8 weights in [-64, 64]: re-solved
    weights are lowered into the same range, their scales grown instead."""
    from onnxruntime.quantization import QuantType

    dense = _quantized(onnx.load(str(fixture_path("digits_cnn.onnx"))), tmp_path / "reduced.onnx",
                       reduce_range=True, activation_type=QuantType.QUInt8)
    _, lifted = lift(dense)
    assert sum(qp.reduced for qp in lifted.values()) == 4  # the four int8 weights, not the int32 biases
    pruned = onnxprune.prune(dense, target_macs=LEVEL, calib=calib, bench_rounds=0).model
    inits, dqs = _constant_dqs(pruned)
    weights = [inits[n.input[0]] for n in dqs if inits[n.input[0]].dtype == np.int8]
    assert len(weights) == 4 and all(np.abs(w.astype(np.int32)).max() <= 64 for w in weights)
    assert _error(pruned, dense) < 0.5


def test_a_bias_recovery_adds_to_a_bias_free_conv_is_quantized(calib, tmp_path):
    """Recovery gives bias-free Convs a bias and re-solves it: lowered to int32 at input x weight scale,
    so no float bias sits in the QDQ graph (ONNX Runtime would not fuse that Conv)."""
    float_model = onnx.load(str(fixture_path("digits_cnn.onnx")))
    dropped = set()
    for node in float_model.graph.node:
        if node.op_type == "Conv" and len(node.input) == 3:
            dropped.add(node.input[2])
            del node.input[2]
    kept = [t for t in float_model.graph.initializer if t.name not in dropped]
    del float_model.graph.initializer[:]
    float_model.graph.initializer.extend(kept)
    dense = _quantized(float_model, tmp_path / "nobias.onnx")
    assert all(len(n.input) == 2 for n in dense.graph.node if n.op_type == "Conv")
    pruned = onnxprune.prune(dense, target_macs=LEVEL, calib=calib, bench_rounds=0).model
    inits = {t.name for t in pruned.graph.initializer}
    produced = {n.output[0]: n.op_type for n in pruned.graph.node}
    convs = [n for n in pruned.graph.node if n.op_type == "Conv"]
    assert any(len(n.input) == 3 for n in convs)  # recovery used a bias somewhere
    for node in convs:
        assert all(t not in inits and produced.get(t) == "DequantizeLinear" for t in node.input)
    assert all(np.array_equal(b, want) for b, want in _bias_checks(pruned))
    assert _error(pruned, dense) < 0.5


def test_weights_quantized_at_run_time_are_lifted():
    """A Constant weight behind QuantizeLinear -> DequantizeLinear (ORT's quantizer on paddle2onnx exports)
    is lifted like an integer one; lowered, it is int8 behind a DequantizeLinear and computes the same."""
    w = RNG_W.standard_normal((4, 1, 2, 2)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
             helper.make_node("QuantizeLinear", ["w", "s", "z"], ["w_q"]),
             helper.make_node("DequantizeLinear", ["w_q", "s", "z"], ["w_dq"]),
             helper.make_node("Conv", ["x", "w_dq"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(np.abs(w).max() / 127), "s"), numpy_helper.from_array(np.int8(0), "z")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    lifted_model, lifted = lift(model)
    assert list(lifted) == ["w_dq"] and len(model.graph.node) == 4  # the input is untouched
    assert [n.op_type for n in lifted_model.graph.node] == ["Conv"]
    back = lower(lifted_model, lifted, lambda tensor, axis: None)
    assert [n.op_type for n in back.graph.node] == ["DequantizeLinear", "Conv"]
    assert numpy_helper.to_array(next(t for t in back.graph.initializer if t.name == "w_q")).dtype == np.int8
    x = RNG_W.standard_normal((1, 1, 4, 4)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(run(back), run(model))
