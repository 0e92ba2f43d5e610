"""Magnitude scores with small tensors batched (score/batched.py) equal, bit for bit, the scores of
the one-slot-at-a-time loop they replace, on every kind of fixture and on tensors larger than a batch."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import analyse, fixture_path
from onnxprune.couple.dependency import Dependency
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
