"""fisher_logit (score/logit_outputs.py): sigmoid outputs probed as their logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.score.logit_outputs import logit_view

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _head() -> onnx.ModelProto:
    """x -> conv a -> SiLU (Sigmoid * a) -> conv box, conv cls -> Sigmoid -> Concat(box, cls) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("wa", (4, 3, 1, 1)), ("wb", (2, 4, 1, 1)), ("wc", (3, 4, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"]), helper.make_node("Sigmoid", ["a"], ["sa"]),
             helper.make_node("Mul", ["a", "sa"], ["h"]),  # SiLU: its Sigmoid is not an output's
             helper.make_node("Conv", ["h", "wb"], ["box"]), helper.make_node("Conv", ["h", "wc"], ["cls"]),
             helper.make_node("Sigmoid", ["cls"], ["p"]), helper.make_node("Concat", ["box", "p"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_the_output_sigmoid_is_bypassed_and_the_inner_one_kept():
    model = _head()
    view = logit_view(model)
    assert view is not None
    assert [n.op_type for n in view.graph.node].count("Sigmoid") == 1  # SiLU's stays
    assert [n.op_type for n in view.graph.node].count("Identity") == 1
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    dense, logits = _run(model, x), _run(view, x)
    assert np.allclose(logits[:, :2], dense[:, :2])  # boxes untouched
    assert np.allclose(1 / (1 + np.exp(-logits[:, 2:])), dense[:, 2:], atol=1e-6)  # the logits of the scores
    assert [n.op_type for n in model.graph.node].count("Sigmoid") == 2  # the input model is not changed


def test_a_model_without_output_sigmoid_has_no_view():
    assert logit_view(onnx.load(str(FIXTURES / "digits_cnn.onnx"))) is None


def test_prune_with_fisher_logit_runs(tmp_path):
    r = onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.8, calib=str(FIXTURES / "digits_calib.npz"),
                        bench_rounds=0, criterion="fisher_logit")
    assert r.report["options"]["criterion"] == "fisher_logit" and r.report["options"]["max_layer_ratio"] == 0.5


def test_a_softmax_output_becomes_its_log_probabilities():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1),
             helper.make_node("Reshape", ["p", "shape"], ["y"])]
    shape = numpy_helper.from_array(np.array([2, 9, 2], np.int64), "shape")
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 9, 2])], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    view = logit_view(model)
    assert view is not None and [n.op_type for n in view.graph.node] == ["MatMul", "LogSoftmax", "Reshape"]
    out = _run(view, x)
    assert np.allclose(np.exp(out), _run(model, x), atol=1e-6)
    floored = logit_view(model, 0.2)
    assert [n.op_type for n in floored.graph.node] == ["MatMul", "LogSoftmax", "Max", "Reshape"]
    assert np.allclose(_run(floored, x), np.maximum(out, np.log(0.2)), atol=1e-6)


def test_a_floor_raises_the_logits_of_unlikely_scores_only():
    model = _head()
    x = 3 * np.random.default_rng(2).standard_normal((1, 3, 4, 4)).astype(np.float32)
    logits, floored = _run(logit_view(model), x), _run(logit_view(model, 0.01), x)
    low = float(np.log(0.01 / 0.99))
    assert np.allclose(floored[:, 2:], np.maximum(logits[:, 2:], low), atol=1e-6)
    assert (logits[:, 2:] < low).any() and (logits[:, 2:] > low).any()  # the case tests both sides
    assert np.allclose(floored[:, :2], logits[:, :2])
