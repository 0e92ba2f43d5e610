"""Magnitude scores of many small tensors at once, with the same values as scoring them one by one.

A 100,000-node chain has 75,000 weight slots of a few thousand elements each: scoring them one at a
time spent most of its time in numpy's per-call overhead (moveaxis, astype, mean, np.add.at per slot).
Here tensors of one shape, type and slot axis are stacked a block at a time and reduced together; each
row is still summed alone along its own contiguous axis (the same pairwise sums), and the channel
scores are added in slot order (np.bincount adds its weights in order, as successive np.add.at did).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.vocabulary import Slot


def power_sums(items: Iterable[tuple[Slot, np.ndarray]], p: int, small: int, block: int,
               one: Callable[[np.ndarray, int, int], np.ndarray]) -> tuple[list[Slot], list[np.ndarray]]:
    """The slots of `items` ((slot, value) pairs, read once) and sum(|row| ** p) of each row of each
    value along its slot's axis. A value of more than `small` elements goes to `one(value, axis, p)`
    as it comes (never held); smaller ones (which Constants keeps decoded anyway) are batched in
    float64 blocks of at most `block` elements."""
    slots: list[Slot] = []
    out: list[np.ndarray | None] = []
    groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
    for slot, value in items:
        slots.append(slot)
        out.append(one(value, slot.axis, p) if value.size > small else None)
        if value.size <= small:
            groups.setdefault((value.shape, value.dtype.str, slot.axis), []).append((len(out) - 1, value))
    for (shape, _, axis), members in groups.items():
        per = max(1, block // max(1, math.prod(shape)))
        for start in range(0, len(members), per):
            chunk = members[start:start + per]
            stacked = np.stack([value for _, value in chunk]).astype(np.float64)
            rows = np.moveaxis(stacked, axis + 1, 1).reshape(len(chunk), shape[axis], -1)
            np.abs(rows, out=rows)
            if p != 1:
                rows **= p  # numpy's scalar-power fast path, as criteria._row_power_sums takes
            sums = rows.sum(2)
            for j, (i, _) in enumerate(chunk):
                out[i] = sums[j]
    return slots, out  # type: ignore[return-value]


def accumulate_all(dep: Dependency, slots: Sequence, values: Sequence[np.ndarray]) -> np.ndarray:
    """criteria.accumulate in one pass: each slot's values over their mean, summed per channel in slot
    order; slots whose mean is not positive add nothing."""
    parts, where = [], []
    for slot, v in zip(slots, values):
        mean = float(np.mean(v))
        if mean > 0:
            parts.append(v / mean)
            where.append(dep.elements(slot))
    if not parts:
        return np.zeros(dep.num_channels)
    return np.bincount(np.concatenate(where), weights=np.concatenate(parts), minlength=dep.num_channels)
