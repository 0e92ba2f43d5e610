"""Magnitude scores with small tensors batched (score/batched.py) equal, bit for bit, the scores of
the one-slot-at-a-time loop they replace, on every kind of fixture and on tensors larger than a batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, analyse, fixture_path
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.couple.ops import linear_sites
from onnxprune.couple.vocabulary import Slot
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import load_npz
from onnxprune.score.calibration import collect_statistics
from onnxprune.score import criteria
from onnxprune.score.batched import power_sums
from onnxprune.score.criteria import _power_sums, accumulate, magnitude, parameter_slots


def _one_by_one(dep: Dependency, p: int) -> np.ndarray:
    return accumulate(dep, ((slot, _power_sums(v, slot.axis, p)) for slot, v in parameter_slots(dep))) ** (1.0 / p)


@pytest.mark.parametrize("name", ["chain.onnx", "digits_cnn.onnx", "mobilenetv2_tiny.onnx", "densenet_tiny.onnx",
                                  "crnn_tiny.onnx", "prenorm_tiny.onnx", "inception_tiny.onnx"])
@pytest.mark.parametrize("p", [1, 2])
def test_batched_magnitude_equals_the_per_slot_loop(name, p):
    _, dep = analyse(fixture_path(name))
    np.testing.assert_array_equal(magnitude(dep, p), _one_by_one(dep, p))


def test_tiny_blocks_and_the_large_path_give_the_same_sums(monkeypatch):
    """Blocks of one tensor, and every tensor sent down the one-at-a-time path, change nothing."""
    _, dep = analyse(fixture_path("mobilenetv2_tiny.onnx"))
    items = list(parameter_slots(dep))
    _, batched = power_sums(iter(items), 2, 1 << 16, 1, _power_sums)
    _, alone = power_sums(iter(items), 2, 0, 1 << 22, _power_sums)
    assert len(batched) == len(items)
    for a, b in zip(batched, alone):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(criteria, "KEEP_ELEMENTS", 0)
    np.testing.assert_array_equal(magnitude(dep, 2), _one_by_one(dep, 2))


def _digits_statistics(grams: bool):
    """digits_cnn's dependency and the statistics of 16 calibration samples (with covariances or not)."""
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    graph = ModelGraph(model)
    data = load_npz(FIXTURES / "digits_calib.npz", {n: len(graph.input_shapes[n]) for n in graph.inputs}).take(16)
    dep = build_dependency(ModelGraph(model, data.sample_shapes()))
    wanted = {(s.tensor, s.axis): grams for s in dep.slots if s.tensor not in dep.graph.constants}
    return dep, collect_statistics(model, data, wanted, shapes={t: dep.graph.shape(t) for t, _ in wanted})


@pytest.mark.parametrize("name", ["reconstruction", "relative"])
def test_wide_linear_inputs_are_scored_a_block_at_a_time(monkeypatch, name):
    """Inputs too wide for a Gram (VGG's 25,088-input classifier) are scored from ||W[c]||^2 summed in
    blocks, never a float64 copy of the weight: the scores equal the whole-tensor formula."""
    dep, stats = _digits_statistics(grams=False)
    monkeypatch.setattr(criteria, "BLOCK_ELEMENTS", 7)  # many blocks per weight

    members, errors = [], []
    for _, site in linear_sites(dep.graph):
        slot, st = Slot(site.x, site.x_axis), stats.get(site.x, site.x_axis)
        if slot not in dep.slot_index or st is None:
            continue
        energy = (criteria.per_index(dep.graph.const(site.weight), site.weight_axis) ** 2).sum(1)
        n = max(st.count, 1)
        if name == "reconstruction":
            members.append((slot, energy * st.sq_sum / n))
        else:
            err = energy * np.maximum(st.sq_sum / n - (st.sum / n) ** 2, 0)
            errors.append((slot, err / err.sum()))
    assert members or errors
    if name == "reconstruction":
        expected = accumulate(dep, members) + 1e-9 * magnitude(dep, 2)
    else:
        expected = np.zeros(dep.num_channels)
        for slot, values in errors:
            np.add.at(expected, dep.elements(slot), values)
        expected += 1e-9 * magnitude(dep, 2)
    np.testing.assert_allclose(criteria.score(dep, name, stats), expected, rtol=1e-12)


def test_reconstruction_with_a_gram_equals_the_whole_tensor_formula():
    """With covariances (narrow inputs), reconstruction scores ||W[c]||^2 / [(Cov + ridge I)^-1]_cc per
    consumer: the lean form (row energies, one ridged copy) equals the formula on whole float64 rows."""
    dep, stats = _digits_statistics(grams=True)
    members = []
    for _, site in linear_sites(dep.graph):
        slot, st = Slot(site.x, site.x_axis), stats.get(site.x, site.x_axis)
        if slot not in dep.slot_index or st is None or st.covariance() is None:
            continue
        rows, cov = criteria.per_index(dep.graph.const(site.weight), site.weight_axis), st.covariance()
        lam = 1e-3 * float(np.trace(cov)) / len(cov)
        members.append((slot, (rows ** 2).sum(1) / np.diag(np.linalg.inv(cov + lam * np.eye(len(cov))))))
    assert members
    expected = accumulate(dep, members) + 1e-9 * magnitude(dep, 2)
    np.testing.assert_allclose(criteria.score(dep, "reconstruction", stats), expected, rtol=1e-9)
