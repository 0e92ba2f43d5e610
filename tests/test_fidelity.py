"""Per-output fidelity: each output is compared on its own, streaming over batches, and the cosine
gate holds for every output (a detector's scores cannot hide behind its box coordinates)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check.fidelity import compare
from onnxprune.check.gates import GateError, evaluate_gates, raise_if_failed
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session


def detector(score_scale: float) -> onnx.ModelProto:
    """x [N, 4] -> boxes = 1000 * x (large), scores = sigmoid(score_scale * x) (small)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4])
    inits = [numpy_helper.from_array(np.array(1000.0, np.float32), "big"),
             numpy_helper.from_array(np.array(score_scale, np.float32), "k")]
    nodes = [helper.make_node("Mul", ["x", "big"], ["boxes"]), helper.make_node("Mul", ["x", "k"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["scores"])]
    graph = helper.make_graph(nodes, "det", [x], [boxes, scores], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def data():
    return Dataset({"x": np.random.default_rng(0).normal(size=(40, 1, 4)).astype(np.float32)})


def test_each_output_is_reported_and_the_worst_one_gates(data):
    dense, broken = session(detector(3.0)), session(detector(-3.0))  # scores flipped, boxes identical
    fid = compare(dense, broken, data, batch_size=7)
    assert fid.cosine > 0.999  # the concatenation hides the damage
    assert fid.outputs["boxes"]["cosine"] == pytest.approx(1.0)
    assert fid.outputs["scores"]["cosine"] < 0.9
    gates = evaluate_gates(fid.as_dict(), min_cosine=0.99)
    with pytest.raises(GateError, match="cosine of output 'scores'"):
        raise_if_failed(gates)


def test_streaming_figures_equal_the_whole_array_figures(data):
    dense, other = session(detector(3.0)), session(detector(2.5))
    fid = compare(dense, other, data, batch_size=3)
    x = data.inputs["x"].astype(np.float64)
    d = np.concatenate([(1000 * x).ravel(), (1 / (1 + np.exp(-3 * x))).ravel()])
    p = np.concatenate([(1000 * x).ravel(), (1 / (1 + np.exp(-2.5 * x))).ravel()])
    assert fid.cosine == pytest.approx(d @ p / np.linalg.norm(d) / np.linalg.norm(p), rel=1e-6)
    assert fid.max_abs == pytest.approx(np.abs(d - p).max(), rel=1e-5)
    s_d, s_p = d[160:], p[160:]
    assert fid.outputs["scores"]["rel_l2"] == pytest.approx(np.linalg.norm(s_d - s_p) / np.linalg.norm(s_d), rel=1e-5)


def test_single_output_models_keep_one_overall_figure(data):
    model = detector(3.0)
    del model.graph.output[0]
    model.graph.node.remove(model.graph.node[0])
    fid = compare(session(model), session(model), data)
    assert fid.cosine == pytest.approx(1.0) and fid.outputs == {} and "outputs" not in fid.as_dict()


def packed_head(score_scale: float) -> onnx.ModelProto:
    """x [N, 4, A] -> [N, 4 + 4, A]: rows 0-3 boxes = 1000 * x, rows 4-7 scores = sigmoid(k * x) / 1000,
    one output as a YOLOv8 export packs them (its class rows ~1e-4 on unlabelled data, the boxes ~100)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8, 6])
    inits = [numpy_helper.from_array(np.array(1000.0, np.float32), "big"),
             numpy_helper.from_array(np.array(score_scale, np.float32), "k"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "small")]
    nodes = [helper.make_node("Mul", ["x", "big"], ["boxes"]), helper.make_node("Mul", ["x", "k"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["p"]), helper.make_node("Mul", ["p", "small"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1)]
    graph = helper.make_graph(nodes, "head", [x], [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_packed_fields_of_different_scales_are_parts_and_the_worst_part_gates():
    data = Dataset({"x": np.random.default_rng(1).normal(size=(20, 1, 4, 6)).astype(np.float32)})
    fid = compare(session(packed_head(3.0)), session(packed_head(-3.0)), data, batch_size=6)
    assert fid.cosine > 0.9999  # the box rows hide the flipped scores
    assert [p["rows"] for p in fid.parts["out"]] == ["0-3", "4-7"]
    x = data.inputs["x"][:, 0].astype(np.float64)
    d, p = 1e-3 / (1 + np.exp(-3 * x)), 1e-3 / (1 + np.exp(3 * x))
    boxes, scores = fid.parts["out"]
    assert boxes["cosine"] == pytest.approx(1.0)
    assert scores["cosine"] == pytest.approx((d * p).sum() / np.linalg.norm(d) / np.linalg.norm(p), rel=1e-6)
    with pytest.raises(GateError, match="cosine of output 'out rows 4-7'"):
        raise_if_failed(evaluate_gates(fid.as_dict(), min_cosine=0.99))
    same = compare(session(packed_head(3.0)), session(packed_head(3.0)), data)
    assert all(part["cosine"] == pytest.approx(1.0) for part in same.parts["out"])
    assert evaluate_gates(same.as_dict(), min_cosine=0.99)[0].passed


def test_fields_of_one_scale_are_not_split():
    """A recognizer's [N, T, classes] or a transformer's [N, seq, hidden]: rows of one scale, no parts."""
    data = Dataset({"x": np.random.default_rng(2).normal(size=(10, 1, 4, 6)).astype(np.float32)})
    model = packed_head(3.0)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(1e-3, np.float32), "big"))
    assert compare(session(model), session(model), data).parts == {}
