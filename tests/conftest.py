"""Shared test helpers: fixture paths, running models, the zero-channel oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune.load.data import synthetic_dataset
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.check.oracle import zero_removed
from onnxprune.couple.plan import Plan
from onnxprune.apply.rewrite import apply_plan
from onnxprune.load.runtime import run_dataset, session
from onnxprune.check.validate import check_valid

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    assert path.exists(), f"missing fixture {path}; run python fixtures/make_fixtures.py"
    return path


def random_plan(dep: Dependency, fraction: float, seed: int) -> Plan:
    """Remove a random `fraction` of every group's unfrozen channels (never all of them)."""
    rng = np.random.default_rng(seed)
    removed = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        candidates = grp.channels[~grp.frozen]
        drop = min(int(round(len(candidates) * fraction)), grp.size - 1)
        if drop > 0:
            removed[rng.choice(candidates, size=drop, replace=False)] = True
    return Plan(dep, removed, {"random": fraction})


def oracle_gap(model: onnx.ModelProto, plan: Plan, input_shapes=None, samples: int = 3) -> float:
    """Worst relative difference between the zeroed dense model and the pruned model."""
    pruned = apply_plan(plan)
    check_valid(pruned, model)
    zeroed = session(zero_removed(plan.dep, plan.removed))
    small = session(pruned)
    data = synthetic_dataset(zeroed, plan.dep.graph.input_shapes, samples)
    worst = 0.0
    for a, b in zip(run_dataset(zeroed, data), run_dataset(small, data)):
        assert a.shape == b.shape
        scale = max(float(np.abs(a).max()), 1e-6)
        worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()) / scale)
    return worst


def analyse(path, input_shapes=None) -> tuple[onnx.ModelProto, Dependency]:
    model = onnx.load(str(path))
    return model, build_dependency(ModelGraph(model, input_shapes))


@pytest.fixture(scope="session")
def tmp_out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("out")


def baked_batch_model() -> onnx.ModelProto:
    """x (N, 6) declared with a dynamic batch, reshaped to (1, 6) inside: a PyTorch `x.view(1, ...)` export
    that runs on one sample at a time only (tests/test_unjoinable_*.py)."""
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(np.array([1, 6], np.int64), "one_row"),
             onnx.numpy_helper.from_array(rng.standard_normal((6, 16)).astype(np.float32), "w1"),
             onnx.numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w2")]
    nodes = [onnx.helper.make_node("Reshape", ["x", "one_row"], ["r"]), onnx.helper.make_node("MatMul", ["r", "w1"], ["a"]),
             onnx.helper.make_node("Relu", ["a"], ["h"]), onnx.helper.make_node("MatMul", ["h", "w2"], ["y"])]
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    graph = onnx.helper.make_graph(nodes, "baked", [x], [y], inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


@pytest.fixture
def stream_calib(tmp_path) -> str:
    """A .npz of 16 token-id samples for the models of fixtures/transformers/make_stream.py."""
    import sys
    sys.path.insert(0, str(FIXTURES / "transformers"))
    import make_stream
    path = tmp_path / "calib.npz"
    np.savez(path, input_ids=np.random.default_rng(1).integers(0, make_stream.V, (16, 1, make_stream.S)))
    return str(path)
