"""A model that declares a dynamic batch axis but bakes batch 1 into a Reshape (as PyTorch exports of
`x.view(1, ...)` do) is fed its calibration samples one at a time instead of failing at batch 2."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.load.data import Dataset
from onnxprune.load.fit import joins


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


def _samples(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 6)).astype(np.float32)} for _ in range(n)]


def test_joins_tells_a_baked_batch_from_a_real_one():
    data = Dataset({"x": np.stack([f["x"] for f in _samples(4)])})
    assert not joins(_baked_batch_model(), data)
    free = _baked_batch_model()
    free.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([-1, 6], np.int64), "one_row"))
    free.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert joins(free, data)


def test_prune_feeds_one_sample_at_a_time():
    model, feeds = _baked_batch_model(), _samples(12)
    result = onnxprune.prune(model, calib=feeds, ratio=0.5, bench_rounds=0)
    w1 = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}["w1"]
    assert w1.shape == (6, 8)
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, feeds[0])[0].shape == (1, 3)
