"""Fine-tuning a QDQ model trains its integer weights (recover/finetune.py lifts them to floats and
re-quantizes them after, with their own scheme), and the result keeps the QDQ form."""

from __future__ import annotations

import collections

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.finetune import finetune

from conftest import fixture_path
from test_qdq_recover import _quantized


def _integer_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1}


def test_qdq_weights_train_and_stay_quantized(tmp_path):
    dense = onnx.load(str(fixture_path("digits_cnn.onnx")))
    qdq = _quantized(dense, tmp_path / "digits_qdq.onnx")
    x = np.load(fixture_path("digits_train.npz"))["input"][:128]
    data = Dataset({"input": x[:, None]})
    untouched = finetune(qdq, data, 0, teacher=dense, progress=False, lr=1e-3, batch_size=32)
    assert np.array_equal(session(untouched.model).run(None, {"input": x})[0], session(qdq).run(None, {"input": x})[0])
    res = finetune(qdq, data, 2, teacher=dense, progress=False, lr=3e-3, batch_size=32, keep="last")
    before, after = _integer_weights(qdq), _integer_weights(res.model)
    assert len(before) == 4 and before.keys() == after.keys()  # the four conv / gemm weights, still int8
    assert sum(not np.array_equal(before[k], after[k]) for k in before) == 4  # every one trained
    assert len(res.trainable) >= 8 and not res.frozen  # weights and biases, as floats
    kinds = lambda m: collections.Counter(n.op_type for n in m.graph.node)  # noqa: E731
    assert kinds(res.model) == kinds(qdq)
