"""tools/diag_distill_signal.py: the per-set figures it reports, and bench_finetune_goal's augment suffixes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_finetune_goal as goal  # noqa: E402
import diag_distill_signal as diag  # noqa: E402


def test_kl_is_zero_for_equal_logits_and_scaled_by_t_squared():
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.4, 0.0]])
    assert np.allclose(diag.kl_per_sample(z, z), 0.0)
    other = z[:, ::-1].copy()
    p = np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
    q = np.exp(other / 2) / np.exp(other / 2).sum(1, keepdims=True)
    assert np.allclose(diag.kl_per_sample(z, other), 4 * (p * np.log(p / q)).sum(1))


def test_compare_counts_disagreements_and_their_dense_margins():
    dense = np.array([[3.0, 0.0], [0.1, 0.0], [0.0, 5.0]])
    student = np.array([[2.0, 0.0], [0.0, 0.2], [0.0, 4.0]])  # flips the near-tie only
    r = diag.compare(dense, student, np.array([0, 0, 1]))
    assert r["disagreeing"] == 1 and r["dense_margin_disagreeing"] == [0.1]
    assert r["accuracy"] == round(200 / 3, 2) and r["dense_accuracy"] == 100.0


def test_augment_suffixes():
    assert goal.variant("auto+augcs")["augment"] == ("crop", "scale")
    assert goal.variant("1e-3+aug")["augment"] == ("flip", "crop", "scale")
    assert goal.variant("auto")["augment"] == ()
