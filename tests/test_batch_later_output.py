"""Fine-tuning a model whose output carries the batch on axis 1 (a CRNN's (T, batch, classes)): the batch
view moves it first with a Transpose and must move the declared output shape with it. Left as declared,
ONNX Runtime unified the batch with T and the loss's Reshape to Shape(logits) failed at any other batch
(captcha_crnn --finetune: exit 3)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import onnxprune


def _time_major():
    """x (batch, 4) -> MatMul 16 -> Relu -> MatMul 6 -> Reshape (batch, 2, 3) -> Transpose -> y (2, batch, 3)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 6)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "split")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
             helper.make_node("MatMul", ["h", "w2"], ["b"]), helper.make_node("Reshape", ["b", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[1, 0, 2])]
    graph = helper.make_graph(nodes, "tmajor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "batch", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_finetune_at_a_batch_other_than_the_time_axis():
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(40)]
    result = onnxprune.prune(_time_major(), calib=feeds, ratio=0.5, round_to=1, finetune_epochs=1,
                             batch_size=8, bench_rounds=0)
    assert result.report["finetune"]["epochs"] == 1


def test_fidelity_of_a_time_major_output_over_uneven_batches():
    """40 samples are compared in batches of 32 and 8; axis 1 of a (T, batch, C) output is the batch, not
    a packed head's fields, so its per-row sums cannot be added across batches (a ValueError before)."""
    rng = np.random.default_rng(2)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(40)]
    result = onnxprune.prune(_time_major(), calib=feeds, ratio=0.5, round_to=1, bench_rounds=0)
    assert result.report["fidelity"]["samples"] == 40 and "parts" not in result.report["fidelity"]
