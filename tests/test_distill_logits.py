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
