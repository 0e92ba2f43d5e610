"""How many channels of a group one width step is, so that kept widths are multiples of `--round-to`.

Rounding exists for the kernels: a layer whose width is a multiple of 8 (16 with AVX-512) fills its
SIMD lanes. What the kernels see is the width of each weight, not the count of a group's channels: an
attention group's channel is a head, 32 or 64 columns of each projection wide, so any number of heads
already keeps every projection a multiple of 8. Rounding head counts to 8 instead kept MiniLM's 12-head
layers at 12 or 8 heads: never the 6 its half-MACs target needed (the plan stopped at 0.557).

A group's step is the fewest channels whose columns make a multiple of `round_to` in every weight it runs
through: the lcm over its weight slots (constants a Conv, MatMul, Gemm or recurrent layer reads, directly or
through DequantizeLinear) of round_to / gcd(round_to, columns per channel). A per-head constant that is not
a weight (a relative-position or ALiBi bias added to the scores) does not count. A group with no weight slot
steps by what its other constant slots need; one with no constant slot keeps `round_to`.
"""

from __future__ import annotations

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


WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Einsum"})


def _steps(dep: Dependency, round_to: int) -> dict[int, int]:
    if round_to <= 1:
        return {grp.id: 1 for grp in dep.groups}
    const = [i for i, slot in enumerate(dep.slots) if dep.graph.is_const(slot.tensor)]
    weights = [i for i in const if _is_weight(dep, dep.slots[i].tensor)]
    by_weights, by_constants = _needs(dep, weights, round_to), _needs(dep, const, round_to)
    return {grp.id: by_weights.get(grp.id, by_constants.get(grp.id, round_to)) for grp in dep.groups}


def _is_weight(dep: Dependency, tensor: str) -> bool:
    """Whether a layer that does the multiplications reads `tensor` (directly or dequantized)."""
    nodes, consumers = dep.graph.nodes, dep.graph.consumers
    for c in consumers.get(tensor, []):
        node = nodes[c]
        if node.op in WEIGHT_OPS:
            return True
        if node.op == "DequantizeLinear" and any(nodes[d].op in WEIGHT_OPS
                                                  for out in node.outputs for d in consumers.get(out, [])):
            return True
    return False


def _needs(dep: Dependency, slots: list[int], round_to: int) -> dict[int, int]:
    """Group id -> lcm over `slots` holding it of round_to / gcd(round_to, its channels' columns there), the
    columns per channel taken as the gcd of each channel's count in the slot (in one numpy pass)."""
    if not slots:
        return {}
    sizes = np.diff(dep.offsets)[slots]
    which = np.repeat(np.arange(len(slots)), sizes)
    labels = np.concatenate([dep.labels[dep.offsets[i]:dep.offsets[i + 1]] for i in slots])
    keys, counts = np.unique(which.astype(np.int64) * dep.num_channels + labels, return_counts=True)
    slot_of, group_of = keys // dep.num_channels, dep.channel_group[keys % dep.num_channels]
    order = np.lexsort((slot_of, group_of))
    slot_of, group_of, counts = slot_of[order], group_of[order], counts[order]
    starts = np.flatnonzero(np.r_[True, (slot_of[1:] != slot_of[:-1]) | (group_of[1:] != group_of[:-1])])
    columns = np.gcd.reduceat(counts, starts)                     # per (group, slot)
    need = round_to // np.gcd(round_to, columns)
    group_runs = group_of[starts]
    firsts = np.flatnonzero(np.r_[True, group_runs[1:] != group_runs[:-1]])
    return dict(zip(group_runs[firsts].tolist(), np.lcm.reduceat(need, firsts).tolist()))


__all__ = ["group_step", "group_steps"]
