"""The training step's memory plan counts everything a step holds (recover/step_memory.py): feature targets
and a teacher that runs inside the step shrink the micro-batch, and the teacher then runs on micro-batches."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover import targets as targets_module
from onnxprune.recover.features import feature_points, sliced_points, with_outputs
from onnxprune.recover.finetune import finetune
from onnxprune.recover.microbatch import micro_batch
from onnxprune.recover.step_memory import peak_live_bytes, step_bytes

TEACHER = onnx.load(str(FIXTURES / "resnet_tiny.onnx"))
X = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
SHAPES = {"input": (1, 3, 32, 32)}


@pytest.fixture(scope="module")
def student() -> onnx.ModelProto:
    return prune(TEACHER, target_macs=0.5, calib=[{"input": X[:2]}], recover="none", bench_rounds=0).model


def _points(student) -> list[str]:
    whole = feature_points(student, TEACHER, {"input": X[:2]})
    return whole + [p for p in sliced_points(student, TEACHER, {"input": X}) if p not in whole]


def test_peak_live_bytes_frees_each_tensor_after_its_last_reader():
    # a = Relu(x); b = Relu(a); c = Relu(b); d = Add(a, c): a lives to the Add, b dies at c
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Add", ["a", "c"], ["d"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert peak_live_bytes(ModelGraph(model, {"x": (1, 4)})) == 3 * 16  # a, b, c at the third node; not all four


def test_feature_targets_and_the_teacher_shrink_the_planned_micro_batch(student):
    points = _points(student)
    assert points
    plain = step_bytes(student, SHAPES, TEACHER)
    featured = step_bytes(student, SHAPES, TEACHER, features=points, teacher_per_batch=True)
    assert plain.teacher == plain.features == 0
    assert featured.activations == plain.activations and featured.gradients == plain.activations
    # the feature bytes are the tensors' own sizes: 3 student-width copies and the teacher's tensor
    s_vals = session(with_outputs(student, points)).run(points, {"input": X[:1]})
    t_vals = session(with_outputs(TEACHER, points)).run(points, {"input": X[:1]})
    assert featured.features == sum(3 * s.nbytes + t.nbytes for s, t in zip(s_vals, t_vals))
    assert featured.teacher > 0
    budget = plain.per_sample * 32 / 2**20  # without features 32 samples of a 64-sample batch fit
    assert micro_batch(64, plain.per_sample, budget) == 32
    micro = micro_batch(64, featured.per_sample, budget)
    assert micro < 32 and micro * featured.per_sample <= budget * 2**20 < (micro + 1) * featured.per_sample


@pytest.mark.parametrize("memory_mb, most", [(1e-6, 1), (None, 16)])
def test_the_teacher_runs_on_micro_batches_with_feature_targets(student, monkeypatch, memory_mb, most):
    seen = []
    original = targets_module.Targets._teach

    def counting(self, feeds):
        seen.append(len(next(iter(feeds.values()))))
        out = original(self, feeds)
        for name in self.features.values():  # each feature target covers the same samples as the run
            assert len(feeds[name]) == seen[-1]
        return out
    monkeypatch.setattr(targets_module.Targets, "_teach", counting)
    data = Dataset({"input": np.random.default_rng(2).standard_normal((32, 1, 3, 32, 32)).astype(np.float32)})
    options = {"memory_mb": memory_mb} if memory_mb else {}
    result = finetune(student, data, 1, teacher=TEACHER, progress=False, threads=1, batch_size=16, lr=1e-3,
                      features=1.0, holdout=0.0, **options)
    assert result.features and np.isfinite(result.history[-1]["loss"])
    training = seen[2:]  # the first runs: one sample each, to size the targets
    assert training and max(training) == most


def test_held_out_scoring_runs_in_micro_batches_and_returns_the_whole_batch():
    from onnxprune.recover.microbatch import Chunked
    sizes = []

    def forward(feeds):
        sizes.append(len(feeds["x"]))
        return feeds["x"] * 2.0
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_array_equal(Chunked(forward, 3)({"x": x}), x * 2.0)
    assert sizes == [3, 3, 3, 1]
