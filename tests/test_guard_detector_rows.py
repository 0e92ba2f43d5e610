"""The fine-tuning guard judges a detector's packed output by its loss alone: its rows (boxes beside
scores, channels off the last axis) have no top-1 class, and the argmax over anchors that top-1
agreement reads there is noise (NudeNet's guard agreement read 0.16-0.19 and vetoed an epoch whose guard
KL had fallen 0.605 -> 0.248). A classifier's guard keeps both measures."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import fixture_path
from onnxprune.load.data import Dataset
from onnxprune.recover.finetune import finetune

RNG = np.random.default_rng(0)


def _detector(scale: float) -> onnx.ModelProto:
    """(N, 3, 8, 8) -> 1x1 Conv to 12 rows -> (N, 12, 64): rows 0-3 'boxes' in pixels, 4-11 'scores'."""
    w = (RNG.standard_normal((12, 3, 1, 1)) * scale).astype(np.float32)
    rows = np.asarray([300] * 4 + [1] * 8, dtype=np.float32).reshape(1, 12, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Mul", ["r", "rows"], ["y"])]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12, 64])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.asarray([0, 12, 64]), "shape"),
                               numpy_helper.from_array(rows, "rows")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_detectors_guard_reads_the_loss_alone():
    teacher, student = _detector(1.0), _detector(1.0)
    data = Dataset({"x": RNG.standard_normal((64, 1, 3, 8, 8)).astype(np.float32)})
    guard = Dataset({"x": RNG.standard_normal((16, 1, 3, 8, 8)).astype(np.float32)})
    result = finetune(student, data, 1, teacher=teacher, guard_data=guard, progress=False, threads=1, lr=1e-3,
                      batch_size=16)
    judged = [e for e in result.history if "guard_loss" in e]
    assert judged and all("guard_agreement" not in e for e in judged)


def test_a_classifiers_guard_reads_agreement_too():
    model = onnx.load(str(fixture_path("digits_cnn.onnx")))
    x = np.load(fixture_path("digits_calib.npz"))["input"][:, None]
    result = finetune(model, Dataset({"input": x[:64]}), 1, teacher=model, guard_data=Dataset({"input": x[64:80]}),
                      progress=False, threads=1, lr=1e-4, batch_size=16)
    judged = [e for e in result.history if "guard_loss" in e]
    assert judged and all("guard_agreement" in e for e in judged)
