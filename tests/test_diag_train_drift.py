"""tools/diag_train_drift.py: the two-sample test finds a shifted distribution and not an identical one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import diag_train_drift as drift  # noqa: E402


def test_mmd_test_tells_a_shift_from_the_same_distribution():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((32, 20)), rng.standard_normal((100, 20))
    _, p_same = drift.mmd_test(a, b, permutations=200)
    _, p_shift = drift.mmd_test(a + 0.8, b, permutations=200)
    assert p_same > 0.05 and p_shift < 0.01


def test_wide_features_are_projected_and_still_tested():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((24, 600)), rng.standard_normal((60, 600))
    a[:, :300] += 0.7  # half the features shifted
    assert drift.mmd_test(a, b, permutations=200)[1] < 0.01
