"""Fine-tuning a float16 model (onnxconverter-common's, float32 at the interface; orinet_fp16 exited 2
with "weight is float16; in-graph training supports float32 weights"): training runs on a float32
twin, the trained weights are written back as float16, the model stays float16 and valid."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.load.runtime import session
from onnxprune.recover.as_float32 import float32_twin
from onnxprune.recover.finetune import finetune


def half_mlp(seed: int = 0, batch="N"):
    """x float32 (N, 8) -> Cast float16 -> MatMul 16 -> Relu -> MatMul 4 -> Cast float32."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float16), "w1"),
             numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.3).astype(np.float16), "w2")]
    nodes = [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
             helper.make_node("MatMul", ["xh", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["b"]), helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _weights(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_a_float16_student_trains_toward_its_teacher_and_stays_float16():
    teacher, student = half_mlp(0), half_mlp(1)  # the student starts elsewhere: distillation must move it
    x = np.random.default_rng(2).standard_normal((64, 8)).astype(np.float32)
    data = Dataset({"x": x[:, None]})  # N samples of (1, 8)
    result = finetune(student, data, 4, teacher=teacher, lr=3e-3, batch_size=16, progress=False)
    after, before = _weights(result.model), _weights(student)
    assert all(w.dtype == np.float16 for w in after.values())
    assert not np.array_equal(after["w1"], before["w1"])
    assert result.best_epoch and result.best_epoch > 0  # a trained epoch beat the untrained one on held-out data
    want = session(teacher).run(None, {"x": x})[0]
    err = [float(np.abs(session(m).run(None, {"x": x})[0] - want).mean()) for m in (student, result.model)]
    assert err[1] < err[0]


def test_prune_with_finetune_on_a_float16_model():
    feeds = [{"x": r[None]} for r in np.random.default_rng(3).standard_normal((48, 8)).astype(np.float32)]
    result = onnxprune.prune(half_mlp(0), calib=feeds, ratio=0.5, round_to=1, finetune_epochs=2, bench_rounds=0)
    weights = _weights(result.model)
    assert weights["w1"].shape == (8, 8) and all(w.dtype == np.float16 for w in weights.values())
    assert result.report["finetune"]["epochs"] == 2
    assert result.report["validation"]["onnxruntime"] == "passed"


def test_a_float16_interface_is_refused_in_one_line():
    model = half_mlp(0)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    del model.graph.node[0]
    model.graph.node[0].input[0] = "x"
    with pytest.raises(BadInputError, match="float16 inputs or outputs"):
        float32_twin(model)
    assert float32_twin(half_mlp(0)).graph.initializer[0].data_type == TensorProto.FLOAT
