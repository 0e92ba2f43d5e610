"""The Pareto front of measured candidates: faster (lower latency ratio) against better (higher quality).

Latency is measured, so two candidates whose ratios differ by less than the timing noise are not
known to differ: they tie on latency and the better quality wins (`dominates`). Without that, points
within the noise of each other swap in and out of the front from one timing to the next (the s8
search runs: byte-identical models, fronts of 6, 4 and 7 points)."""

from __future__ import annotations

import numpy as np


TIE_K = 1.0  # cost differences under TIE_K standard errors of a difference are ties
TIE_FLOOR = 0.01  # ... and so is any difference under 1% of the dense latency


def tie_width(noise: float, k: float = TIE_K, floor: float = TIE_FLOOR) -> float:
    """How far apart two measured latency ratios must be for one to count as faster, given the
    standard error `noise` of one ratio (search/timing.py): `k` standard errors of the difference of
    two, at least `floor`."""
    return max(k * float(np.sqrt(2.0)) * noise, floor)


def dominates(a: dict, b: dict, tie: float = 0.0, cost: str = "latency_ratio", gain: str = "quality") -> bool:
    """`a` is at least as good as `b` on both axes and better on one, where cost differences up to
    `tie` are no difference (epsilon-dominance): a slightly slower point with a better gain wins."""
    return (a[gain] >= b[gain] and a[cost] <= b[cost] + tie
            and (a[gain] > b[gain] or a[cost] < b[cost] - tie))


def pareto_front(points: list[dict], cost: str = "latency_ratio", gain: str = "quality", tie: float = 0.0) -> list[dict]:
    """The points no other point dominates (lower `cost`, higher `gain`, costs within `tie` of each
    other equal), sorted by cost; of points tied on both, the first in cost order stays. Gain is
    deterministic (the same model scores the same), cost is measured: with `tie` at the measured
    noise, a re-timed search keeps the same front unless two points sit near the tie width."""
    ordered = sorted(points, key=lambda p: (p[cost], -p[gain]))
    front = []
    for i, point in enumerate(ordered):
        beaten = any(dominates(other, point, tie, cost, gain) for other in ordered if other is not point)
        twin = any(other[gain] == point[gain] and abs(other[cost] - point[cost]) <= tie for other in ordered[:i])
        if not beaten and not twin:
            front.append(point)
    return front


def plot_front(points: list[dict], front: list[dict], path: str, title: str) -> None:
    """Every candidate as a dot, the front as a line (matplotlib, drawn off-screen)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p["latency_ratio"] for p in points], [p["quality"] for p in points], s=14, color="0.6",
               label="candidates")
    ax.plot([p["latency_ratio"] for p in front], [p["quality"] for p in front], "o-", color="C0", label="front")
    for p in front:
        ax.annotate(p["label"], (p["latency_ratio"], p["quality"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("latency vs dense (paired)")
    ax.set_ylabel(front[0]["quality_name"] if front else "quality")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
