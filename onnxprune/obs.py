"""The 'obs' criterion: greedy Optimal Brain Surgeon channel removal at every linear consumer.

`reconstruction` scores each input channel alone (||W_c||^2 / [H^-1]_cc, the error of removing it
when the others compensate). Channels are not removed alone: two near-duplicate channels each look
free, yet removing both is not. Here each consumer removes its input channels one at a time, always
the one whose removal (with the remaining weights re-solved, as ThiNet and He et al. 2017 reconstruct)
costs least given those already gone; the weights and the inverse Gram are updated after each step
(the OBS rank-one downdate). A channel's score is the running maximum of those costs at its turn, so
the order within a consumer is the greedy order; groups sum their consumers' normalised scores.
"""

from __future__ import annotations

import numpy as np

from .calibration import Statistics
from .dependency import Dependency
from .importance import _need, accumulate, criterion, magnitude, per_index
from .ops.base import Slot


def greedy_costs(weight_rows: np.ndarray, cov: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Per input channel: the running-max OBS cost at the step greedy removal takes it.

    `weight_rows` is [C, outputs] (one row per input channel), `cov` its input's [C, C] covariance.
    """
    c = len(cov)
    lam = ridge * max(float(np.trace(cov)) / max(c, 1), 1e-12)
    hinv = np.linalg.inv(cov + lam * np.eye(c))
    w = weight_rows.astype(np.float64).copy()
    alive = np.ones(c, dtype=bool)
    costs = np.zeros(c)
    running = 0.0
    for _ in range(c - 1):
        idx = np.flatnonzero(alive)
        d = np.maximum(np.diag(hinv)[idx], 1e-30)
        err = (w[idx] ** 2).sum(1) / d
        j = idx[int(np.argmin(err))]
        running = max(running, float(err.min()))
        costs[j] = running
        col = hinv[:, j] / hinv[j, j]
        w -= np.outer(col, w[j])            # the others compensate for channel j
        hinv -= np.outer(col, hinv[j])      # inverse of the Gram restricted to the survivors
        alive[j] = False
        hinv[j] = hinv[:, j] = 0.0
    costs[alive] = running * 2 + 1e-12      # the last survivor is the one to keep
    return costs


@criterion("obs", data=True, gram=True)
def obs(dep: Dependency, stats: Statistics | None = None, ridge: float = 1e-3, **_) -> np.ndarray:
    """Greedy OBS order of each linear consumer's input channels, from the calibration covariance."""
    from .recover import linear_sites
    stats = _need(stats, "obs")
    members = []
    for _, site in linear_sites(dep.graph):
        slot = Slot(site.x, site.x_axis)
        st = stats.get(site.x, site.x_axis)
        if slot not in dep.slot_index or st is None:
            continue
        rows = per_index(dep.graph.const(site.weight), site.weight_axis)
        cov = st.covariance()
        if cov is None:  # too wide for a Gram: the diagonal approximation
            members.append((slot, (rows ** 2).sum(1) * st.sq_sum / max(st.count, 1)))
            continue
        members.append((slot, greedy_costs(rows, cov, ridge)))
    return accumulate(dep, members) + 1e-9 * magnitude(dep, 2)  # ties where a group has no linear consumer
