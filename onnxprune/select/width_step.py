"""How many channels of a group one width step is, so that kept widths are multiples of `--round-to`.

Rounding exists for the kernels: a layer whose width is a multiple of 8 (16 with AVX-512) fills its
SIMD lanes. What the kernels see is the width of each weight, not the count of a group's channels: an
attention group's channel is a head, 32 or 64 columns of each projection wide, so any number of heads
already keeps every projection a multiple of 8. Rounding head counts to 8 instead kept MiniLM's 12-head
layers at 12 or 8 heads: never the 6 its half-MACs target needed (the plan stopped at 0.557).

A group's step is the fewest channels whose columns make a multiple of `round_to` in every weight the
group runs through (the lcm over its constant slots of round_to / gcd(round_to, columns per channel));
a group with no constant slot keeps `round_to`.
"""

from __future__ import annotations

from math import gcd, lcm

import numpy as np

from onnxprune.couple.dependency import Dependency, Group


def group_steps(dep: Dependency, round_to: int) -> dict[int, int]:
    """Group id -> its width step in channels (memoized on `dep` per round_to)."""
    memo = dep.__dict__.setdefault("_width_steps", {})
    if round_to not in memo:
        memo[round_to] = _steps(dep, round_to)
    return memo[round_to]


def group_step(dep: Dependency, grp: Group, round_to: int) -> int:
    return group_steps(dep, round_to).get(grp.id, round_to)


def _steps(dep: Dependency, round_to: int) -> dict[int, int]:
    if round_to <= 1:
        return {grp.id: 1 for grp in dep.groups}
    steps: dict[int, int] = {}
    sizes = np.asarray([grp.size for grp in dep.groups] or [1])
    for i, slot in enumerate(dep.slots):
        if not dep.graph.is_const(slot.tensor):
            continue
        labels = dep.labels[dep.offsets[i]:dep.offsets[i + 1]]
        groups, counts = np.unique(dep.channel_group[labels], return_counts=True)
        for gid, count in zip(groups.tolist(), counts.tolist()):
            per_channel = count // sizes[gid] if count % sizes[gid] == 0 else 1
            need = round_to // gcd(round_to, per_channel)
            steps[gid] = lcm(steps.get(gid, 1), need)
    return {grp.id: steps.get(grp.id, round_to) for grp in dep.groups}


__all__ = ["group_step", "group_steps"]
