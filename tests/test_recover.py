"""Recovery without training: exact where the theory says so, and better than nothing on real data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.score.calibration import collect_statistics
from onnxprune.load.data import Dataset, load_npz
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.couple.plan import Plan
from onnxprune.recover.reconstruction import add_missing_biases, recover, wanted_statistics
from onnxprune.apply.rewrite import apply_plan
from onnxprune.load.runtime import run_dataset, session


def _two_convs(w1: np.ndarray, b1: np.ndarray, pads: int) -> onnx.ModelProto:
    """x -> Conv1 (1x1, no activation) -> Conv2 (3x3) -> y; Conv1's channels are what we prune."""
    rng = np.random.default_rng(1)
    w2 = rng.standard_normal((5, w1.shape[0], 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
             numpy_helper.from_array(w2, "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"], pads=[pads] * 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _prune_channel(model, channel, method, data):
    working = add_missing_biases(model)
    dep = build_dependency(ModelGraph(working, data.sample_shapes()))
    removed = np.zeros(dep.num_channels, dtype=bool)
    grp = next(g for g in dep.groups if any(s.tensor == "w1" for s in g.slots))
    removed[grp.channels[channel]] = True
    stats = collect_statistics(working, data, wanted_statistics(dep, removed, method))
    pruned = apply_plan(Plan(dep, removed), recover(dep, removed, stats, method))
    reference = run_dataset(session(model), data)[0]
    return np.abs(run_dataset(session(pruned), data)[0] - reference).max() / np.abs(reference).max()


def _data(n=24):
    rng = np.random.default_rng(0)
    return Dataset({"x": rng.standard_normal((n, 1, 3, 6, 6)).astype(np.float32)})


def test_lstsq_is_exact_for_a_linear_combination():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w1[2] = 2 * w1[0] - w1[1]          # channel 2 carries nothing new
    b1 = np.array([0.1, -0.2, 0.4, 0.3], np.float32)  # and its bias is the same combination
    model = _two_convs(w1, b1, pads=1)
    data = _data()
    assert _prune_channel(model, 2, "lstsq", data) < 1e-3
    assert _prune_channel(model, 2, "none", data) > 0.05


def test_bias_is_exact_for_a_constant_channel():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w1[1] = 0.0
    b1 = np.array([0.1, 3.0, 0.4, 0.3], np.float32)   # channel 1 is the constant 3
    model = _two_convs(w1, b1, pads=0)                  # no padding: the constant reaches every tap
    data = _data()
    assert _prune_channel(model, 1, "bias", data) < 1e-5
    assert _prune_channel(model, 1, "none", data) > 0.05


@pytest.mark.parametrize("name", ["mlp.onnx", "flatten_fc.onnx", "transformer_tiny_dynamo.onnx"])
def test_recovery_runs_on_gemm_and_matmul_models(name):
    model = onnx.load(str(FIXTURES / name))
    g = ModelGraph(model)
    rng = np.random.default_rng(0)
    shape = g.input_shapes["input"]
    data = Dataset({"input": rng.standard_normal((32,) + shape).astype(np.float32)})
    plain = prune(model, 0.5, calib=data, round_to=1, bench_rounds=0, criterion="l2", scope="local", recover="none")
    fixed = prune(model, 0.5, calib=data, round_to=1, bench_rounds=0, criterion="l2", scope="local", recover="lstsq")
    assert fixed.report["fidelity"]["rel_l2"] < plain.report["fidelity"]["rel_l2"]


def test_recovery_needs_data():
    from onnxprune.errors import BadInputError
    with pytest.raises(BadInputError):
        prune(FIXTURES / "chain.onnx", 0.5, recover="lstsq")


def test_digits_half_macs_label_free():
    """The issue's bar: at half the MACs, lstsq recovery within 2 points of dense, and above plain L2."""
    test = load_npz(FIXTURES / "digits_test.npz", {"input": 4})

    def accuracy(model):
        return float((run_dataset(session(model), test)[0].argmax(1) == test.labels).mean())

    dense = accuracy(onnx.load(str(FIXTURES / "digits_cnn.onnx")))
    best = prune(FIXTURES / "digits_cnn.onnx", target_macs=0.5, calib=FIXTURES / "digits_calib.npz", round_to=1,
                 criterion="activation", scope="global", recover="lstsq", bench_rounds=0)
    plain = prune(FIXTURES / "digits_cnn.onnx", target_macs=0.5, round_to=1, bench_rounds=0)
    assert abs(best.report["after"]["macs"] / best.report["before"]["macs"] - 0.5) <= 0.02
    assert accuracy(best.model) >= dense - 0.02
    assert accuracy(best.model) > accuracy(plain.model)
