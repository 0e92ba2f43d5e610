"""fisher_prior: fisher's scores with a data-free floor for channels the calibration data leaves silent.

fisher measures what removing a channel does to the outputs on the calibration samples. A channel that
fires only on inputs the samples never show (a detector's face channels on face-free crops) scores ~0,
so a global ranking calls it free, though its weights say it computes something. Here each channel gets

    s'_c = s_c + PRIOR_WEIGHT * mean_group(s) * l2_c / mean_group(l2)

the group L2 norm of its weights (score/criteria.py `l2`) scaled to its group's mean fisher score. Every
group's total grows by the same factor (1 + PRIOR_WEIGHT), so the allocation across groups stays near
fisher's; within a group, of two channels the data finds equally cheap, the one with the larger weights
is kept.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion, magnitude
from onnxprune.score.fisher import fisher_scores

PRIOR_WEIGHT = 0.5  # the prior's share of each group's total, next to fisher's 1


def with_prior(dep: Dependency, scores: np.ndarray, prior: np.ndarray, weight: float = PRIOR_WEIGHT) -> np.ndarray:
    """`scores` plus `weight` times `prior`, the prior rescaled per group to the group's mean score."""
    out = scores.astype(np.float64, copy=True)
    for grp in dep.groups:
        ch = grp.channels
        p_mean, s_mean = float(prior[ch].mean()), float(scores[ch].mean())
        if p_mean > 0 and np.isfinite(s_mean):
            out[ch] += weight * s_mean * prior[ch] / p_mean
    return out


@criterion("fisher_prior", data=True, gram=True)  # Grams: fisher's reconstruction fallback
def fisher_prior(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher, each channel floored by its weights' L2 norm scaled to its group's mean fisher score."""
    return with_prior(dep, fisher_scores(dep, data, seed=seed, stats=stats), magnitude(dep, 2))


COMPARABLE.add("fisher_prior")
