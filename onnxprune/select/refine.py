"""Closing the last gap to a cost target, weighing what each step costs the model.

Width rounding makes a plan's cost a step function of the share searched, so the bisection in
`search_ratio` may stop short of (or past) the target. The gap is then closed one width step at a
time. Taking the step that lands closest to the target ignores what it removes: on magika it cut the
byte embedding to 12% to land on 0.8 of the MACs, and the model at 0.8 scored below the one at 0.5.

Here every candidate step must shrink the gap, and among those the cheapest in importance per unit of
cost moved wins: a removal takes the channels whose (per-group normalised) scores are lowest per MAC
saved, a restoration the ones whose scores are highest per MAC added. The gap shrinks every round, so
the search ends. No step takes a group below its least width (`least_widths`: the per-layer cap the
selection honoured): without it the last steps cut the digits CNN's conv3 from 64 to 24 channels under a
0.5 cap, and three `--steps` compounded that to one channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.select.width_step import group_step


def normalised(dep: Dependency, scores: np.ndarray) -> np.ndarray:
    """Each group's scores over the group's mean, as global selection ranks them (comparable across groups)."""
    out = np.zeros(dep.num_channels)
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        if len(free):
            mean = float(scores[free].mean())
            out[free] = scores[free] / mean if mean > 0 else scores[free]
    return out


@dataclass(frozen=True)
class WidthLimits:
    """What the last width steps may not do: touch a group in `skip`, take one under its `least` width."""

    skip: set[int] = field(default_factory=set)
    least: dict[int, int] = field(default_factory=dict)


def least_widths(dep: Dependency, max_layer_ratio: float, min_channels: int = 1,
                 floors: dict[int, int] | None = None) -> dict[int, int]:
    """Per group, the fewest channels a selection may leave it: what the per-layer cap and
    `min_channels` allow, or its entry in `floors` where that is more (iterative pruning's cap,
    counted against the dense model's group)."""
    floors = floors or {}
    return {grp.id: max(grp.size - min(int(grp.size * max_layer_ratio), grp.size - max(min_channels, 1)),
                        floors.get(grp.id, 0)) for grp in dep.groups}


def width_moves(dep: Dependency, removed: np.ndarray, scores: np.ndarray, round_to: int,
                skip: set[int] = frozenset(), least: dict[int, int] | None = None) -> Iterator[tuple[np.ndarray, bool]]:
    """Per group not in `skip`: its least important next width step to remove (none that leaves it
    under `least`), its most important one to restore."""
    least = least or {}
    for grp in dep.groups:
        if grp.id in skip:
            continue
        free = grp.channels[~grp.frozen]
        if len(free) == 0:
            continue
        step = group_step(dep, grp, round_to)
        step = step if grp.size > step else 1
        kept = grp.size - int(removed[grp.channels].sum())
        alive, dead = free[~removed[free]], free[removed[free]]
        shrink_to = (kept - 1) // step * step
        if shrink_to >= max(step, least.get(grp.id, 1)) and kept - shrink_to <= len(alive):
            yield alive[np.argsort(scores[alive], kind="stable")[:kept - shrink_to]], True
        if len(dead):
            grow = min(min((kept // step + 1) * step, grp.size) - kept, len(dead))
            yield dead[np.argsort(-scores[dead], kind="stable")[:grow]], False


def refine_weighted(plan: Plan, scores: np.ndarray, cost: Callable[[Plan], float], target: float, round_to: int,
                    tolerance: float, max_steps: int = 200, skip: set[int] | None = None,
                    normalize: bool = True, least: dict[int, int] | None = None) -> Plan:
    """Width steps toward `target` (a kept fraction), each the least damaging per unit of cost among
    those that shrink the gap; stops within `tolerance` or when no step shrinks it. Groups in `skip`
    (excluded by the user or by select/coverage.py) keep their width; none goes under `least`."""
    dep = plan.dep
    weight = normalised(dep, scores) if normalize else scores  # as the selection ranked them
    removed = plan.removed.copy()
    kept = cost(plan)
    for _ in range(max_steps):
        gap = abs(kept - target)
        if gap <= tolerance:
            break
        best = None  # (price, trial, kept)
        for channels, remove in width_moves(dep, removed, scores, round_to, skip or set(), least):
            trial = removed.copy()
            trial[channels] = remove
            trial_kept = cost(Plan(dep, trial))
            moved = abs(trial_kept - kept)
            if abs(trial_kept - target) >= gap or moved <= 0:
                continue
            value = float(weight[channels].sum()) / moved
            price = value if remove else -value  # removing: least lost per cost; restoring: most regained
            if best is None or price < best[0]:
                best = (price, trial, trial_kept)
        if best is None:
            break
        _, removed, kept = best
    return Plan(dep, removed, dict(plan.options, refined=True))
