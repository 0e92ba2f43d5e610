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
