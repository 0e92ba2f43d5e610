"""Distillation on the logits a final Softmax reads (recover/logits.py), not on its probabilities."""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune
from onnxprune.recover.logits import softmax_input


def _classifier(seed: int, axis: int = -1, identity: bool = True) -> onnx.ModelProto:
    """x (N, 6) -> Gemm -> Softmax(axis) [-> Identity] -> probs (N, 4)."""
    w = numpy_helper.from_array(np.random.default_rng(seed).normal(size=(4, 6)).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["p" if identity else "probs"], axis=axis)]
    if identity:
        nodes.append(helper.make_node("Identity", ["p"], ["probs"]))
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_softmax_input_is_found_through_identities_on_the_last_axis_only():
    assert softmax_input(_classifier(0), "probs") == "logits"
    assert softmax_input(_classifier(0, axis=1, identity=False), "probs") == "logits"  # axis 1 of rank 2: last
    assert softmax_input(_classifier(0, axis=0), "probs") is None
    assert softmax_input(_classifier(0), "w") is None
    opaque = _classifier(0, axis=1)  # PP-OCR cls: axis 1, no shape known for the Softmax's own output
    opaque.graph.node[0].op_type = "Custom"  # shape inference cannot pass it; the declared output's rank tells
    opaque.graph.node[0].domain = "custom.domain"
    assert softmax_input(opaque, "probs") == "logits"


def test_distilling_logits_matches_the_teachers_logits_and_keeps_the_model_interface(caplog):
    teacher, student = _classifier(0), _classifier(5)
    x = np.random.default_rng(1).normal(size=(256, 1, 6)).astype(np.float32)
    data = Dataset({"x": x})
    runs = {}
    for logits in (True, False):
        with caplog.at_level(logging.INFO, logger="onnxprune"):
            runs[logits] = finetune(student, data, 6, teacher=teacher, lr=3e-2, batch_size=32, progress=False,
                                    softmax_logits=logits, keep="last")
        assert ("distilling the logits 'logits'" in caplog.text) == logits
        caplog.clear()
    out = {k: session(r.model).run(None, {"x": x[:, 0]}) for k, r in runs.items()}
    assert all(len(o) == 1 and o[0].shape == (256, 4) for o in out.values())  # the output is still the probabilities
    want = session(teacher).run(None, {"x": x[:, 0]})[0]
    error = {k: float(np.abs(o[0] - want).mean()) for k, o in out.items()}
    assert error[True] < error[False]  # the same steps on logits come closer to the teacher's probabilities


def test_labels_train_the_logits_a_final_softmax_reads():
    """With labels the cross-entropy is taken on the Softmax's logits; before, on its probabilities read as logits,
    whose gradient vanishes where the model is confident (a saturated 4-class model reached 73% instead of 86%)."""
    import pytest
    from onnxprune.autodiff.losses import numpy_loss
    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 16)).astype(np.float32), "w2": rng.standard_normal((16, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((512, 1, 8)).astype(np.float32)
    y = (x[:, 0, 0] > 0).astype(np.int64) + 2 * (x[:, 0, 1] > 0).astype(np.int64)
    result = finetune(model, Dataset({"x": x[:384]}, labels=y[:384]), 20, progress=False, threads=1, lr=3e-2,
                      val_data=Dataset({"x": x[384:]}, labels=y[384:]))
    z = np.maximum(x[384:, 0] @ w["w1"], 0) @ w["w2"]
    assert result.history[0]["val_loss"] == pytest.approx(numpy_loss("cross_entropy", z, y[384:]), rel=1e-4)
    assert result.history[-1]["val_accuracy"] >= 0.8


def test_the_training_schedules_read_the_softmax_logits_too():
    """Pre-/In-/Post-Training and SET (recover/schedules) train with labels through TrainingRun: its loss, too,
    is on the logits a final Softmax reads."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxprune.recover.schedules.loop import TrainConfig, TrainingRun
    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 4)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["z"]), helper.make_node("Softmax", ["z"], ["p"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((32, 1, 8)).astype(np.float32)
    run = TrainingRun(model, Dataset({"x": x}, labels=(x[:, 0, 0] > 0).astype(np.int64)), 1, TrainConfig(lr=1e-2))
    assert run.tg.logits == "z"
    assert [o.name for o in run.model.graph.output] == ["p"]  # trained weights go back into the model as given
