"""Training data given apart from the calibration data (--train-data) is probed like it: a model that
declares a dynamic batch but bakes batch 1 into a Reshape trains one sample per step. The probe ran only
on --calib, so fine-tuning khmersm on --train-data crashed in ONNX Runtime at batch 32 (exit 3)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune


def _baked_batch_model():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array([1, 6], np.int64), "one_row"),
             numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Reshape", ["x", "one_row"], ["r"]), helper.make_node("MatMul", ["r", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _samples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 6)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("samples", [16, 64])  # 64: enough to hold some out, which kept the flag only since
def test_finetune_on_separate_training_data_feeds_one_sample_at_a_time(samples):
    result = onnxprune.prune(_baked_batch_model(), calib=_samples(12, 1), train_data=_samples(samples, 2), ratio=0.5,
                             finetune_epochs=1, bench_rounds=0)
    assert result.report["finetune"]["epochs"] == 1
    assert np.isfinite(result.report["fidelity"]["cosine"])
