"""A model that declares a dynamic batch axis but bakes batch 1 into a Reshape (as PyTorch exports of
`x.view(1, ...)` do) is fed its calibration samples one at a time instead of failing at batch 2."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import numpy_helper

import onnxprune
from conftest import baked_batch_model
from onnxprune.load.data import Dataset
from onnxprune.load.fit import joins


def _samples(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 6)).astype(np.float32)} for _ in range(n)]


def test_joins_tells_a_baked_batch_from_a_real_one():
    data = Dataset({"x": np.stack([f["x"] for f in _samples(4)])})
    assert not joins(baked_batch_model(), data)
    free = baked_batch_model()
    free.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([-1, 6], np.int64), "one_row"))
    free.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert joins(free, data)


def test_prune_feeds_one_sample_at_a_time():
    model, feeds = baked_batch_model(), _samples(12)
    result = onnxprune.prune(model, calib=feeds, ratio=0.5, bench_rounds=0)
    w1 = {i.name: numpy_helper.to_array(i) for i in result.model.graph.initializer}["w1"]
    assert w1.shape == (6, 8)
    sess = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, feeds[0])[0].shape == (1, 3)
