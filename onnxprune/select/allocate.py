"""Allocation by damage per MAC: each group is pruned while the damage it adds per MAC it saves stays
under one price, the price bisected to the target (a Lagrangian knapsack over the measured curves).

`select_by_sensitivity` spends one damage tolerance across groups: a group whose channels are cheap
(a 16-channel stem, a head's last 1x1) is pruned as far as one whose channels carry a quarter of the
model's MACs, although cutting it saves little. Here a group's measured points (share removed,
damage when pruned alone, MACs saved) are reduced to their lower convex hull, whose segments have
rising prices (damage per MAC saved); at a price every group takes the segments priced below it.
As the price rises a group's share only grows, so plans nest and the task metric cannot recover
as the MACs target falls.

Damage is each output's error relative to its dense variance, per channel (axis 1; the last axis of
a [samples, classes] output), averaged over channels, the worst output counting: a detector's class
scores weigh as much as its box coordinates, whose pixel-sized values would dominate a cosine.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.select.plan import CostModel, capped_keep, rounded_keep
from onnxprune.select.refine import least_widths


def _per_channel(x: np.ndarray) -> np.ndarray:
    """[channels, values]: axis 1 (the last axis of a 2-D output) first, everything else flattened."""
    x = x.astype(np.float64)
    if x.ndim < 2:
        return x.reshape(1, -1)
    axis = 1 if x.ndim >= 3 else x.ndim - 1
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def channel_errors(reference: list[np.ndarray], outputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per float output: (MSE, dense variance) of each channel."""
    out = []
    for d, p in zip(reference, outputs):
        if not isinstance(d, np.ndarray) or d.dtype == object or not np.issubdtype(d.dtype, np.floating):
            continue
        d, p = _per_channel(d), _per_channel(np.asarray(p))
        out.append((((p - d) ** 2).mean(1), d.var(1)))
    return out


def combine(errors: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Worst over outputs of the mean over channels of MSE / variance."""
    worst = 0.0
    for mse, var in errors:
        # a channel (almost) constant on the data, such as a class never seen, is judged on a typical scale
        floor = max(float(np.median(var)) * 1e-2, 1e-12)
        err = mse / np.maximum(var, floor)
        worst = max(worst, float(err.mean()) if np.all(np.isfinite(err)) else np.inf)
    return worst


def output_error(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Worst over the float outputs of the mean over channels of MSE / dense variance."""
    return combine(channel_errors(reference, outputs))


def _alone(dep: Dependency, grp, scores: np.ndarray, ratio: float) -> np.ndarray:
    free = grp.channels[~grp.frozen]
    drop = min(grp.size - rounded_keep(grp.size, ratio, 1), len(free))
    removed = np.zeros(dep.num_channels, dtype=bool)
    removed[free[np.argsort(scores[free], kind="stable")[:drop]]] = True
    return removed


def hull(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Lower convex hull of (saved, damage, share) from (0, 0, 0), keeping only points that save more:
    the prices (damage per MAC saved) of successive segments rise."""
    pts = sorted(points)
    out = [(0.0, 0.0, 0.0)]
    for s, d, r in pts:
        if s <= out[-1][0] + 1e-12:  # saves no more than a point already taken
            continue
        while len(out) >= 2:
            (s0, d0, _), (s1, d1, _) = out[-2], out[-1]
            if (d1 - d0) * (s - s0) >= (d - d0) * (s1 - s0):  # the middle point lies above the chord
                out.pop()
            else:
                break
        out.append((s, d, r))
    return out


class PriceAllocator:
    """select(share) -> Plan: each group at the furthest hull point whose segment price is at most
    the price `share` maps to (share 0: nothing removed; toward 1: every group at its last point)."""

    def __init__(self, dep: Dependency, rows: list[dict], scores: np.ndarray, round_to: int = 1,
                 max_layer_ratio: float = 0.9, min_channels: int = 1):
        self.dep, self.scores = dep, scores
        self.round_to, self.max_layer_ratio, self.min_channels = round_to, max_layer_ratio, min_channels
        costs = CostModel(dep)
        by_id = {grp.id: grp for grp in dep.groups}
        self.curves = {}
        for row in rows:
            grp = by_id[row["group"]]
            damage = row.get("damage") or {r: 1.0 - c for r, c in row["cosine"].items()}
            points = []
            for r, d in damage.items():
                saved = 1.0 - costs.macs_after(_alone(dep, grp, scores, r)) / max(costs.total_macs, 1e-30)
                points.append((saved, max(float(d), 0.0), float(r)))
            self.curves[grp.id] = hull(points)
        prices = [(b[1] - a[1]) / (b[0] - a[0]) for h in self.curves.values() for a, b in zip(h, h[1:])]
        positive = [p for p in prices if p > 0]
        self.scale = float(np.median(positive)) if positive else 1.0

    def share_of(self, gid: int, price: float) -> float:
        h = self.curves[gid]
        share = 0.0
        for a, b in zip(h, h[1:]):
            if (b[1] - a[1]) > price * (b[0] - a[0]):
                break
            share = b[2]
        return share

    def __call__(self, share: float) -> Plan:
        removed = np.zeros(self.dep.num_channels, dtype=bool)
        if share <= 0:
            return Plan(self.dep, removed, {"ratio": 0.0, "scope": "damage"})
        price = self.scale * share / max(1.0 - share, 1e-9) if share < 1 else np.inf
        least = least_widths(self.dep, self.max_layer_ratio, self.min_channels)
        for grp in self.dep.groups:
            if grp.id not in self.curves or grp.prunable == 0:
                continue
            ratio = min(self.share_of(grp.id, price), self.max_layer_ratio)
            if ratio <= 0:
                continue
            keep = capped_keep(self.dep, grp, ratio, self.round_to, least[grp.id], self.min_channels)
            free = grp.channels[~grp.frozen]
            drop = min(grp.size - keep, len(free))
            if drop > 0:
                removed[free[np.argsort(self.scores[free], kind="stable")[:drop]]] = True
        return Plan(self.dep, removed, {"ratio": share, "round_to": self.round_to, "scope": "damage",
                                        "price": price})
