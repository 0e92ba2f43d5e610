"""What one channel of each group costs, in MACs: the weights of a global ranking by importance per
MAC saved (`--scope cost`).

Global selection ranks channels by their scores over their group's mean, so every group's average
channel counts the same whatever it costs: a 16-channel stem whose channels each cost 0.1% of the
model falls as readily as a block whose channels cost 1%. Dividing by each group's MACs per channel
spends the damage where the MACs are, as `--scope price` does with measured damage, at no extra
forward pass.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.select.plan import CostModel


# how far each scope divides by a channel's MACs: cost by the MACs, blend by their square root (between
# global, which ignores them, and cost: per-MAC ranking alone over-cuts the few costly groups of a
# classifier, global alone the many cheap ones of a recognizer; docs/benchmarks.md, "Per-output balance")
POWERS = {"cost": 1.0, "blend": 0.5}
# `auto` (the data-aware default) slides from cost at mild targets to global at deeper ones: with a fifth
# of the MACs to remove there are enough near-useless channels that where they sit in MACs decides; with
# more to remove the channels that matter must be kept wherever they are (per MAC, PP-OCR cls loses 4
# points at half the MACs and orinet 2 pages more than global at 0.7; globally, NudeNet and PP-OCRv4 rec
# lose most at 0.8; docs/benchmarks.md, "A scope that follows the target")
AUTO_MILD, AUTO_DEEP = 0.8, 0.7


def auto_power(kept: float) -> float:
    """The power `auto` divides by for a target keeping `kept` of the MACs: 1 (cost) from AUTO_MILD up,
    0 (global) from AUTO_DEEP down, linear between."""
    return float(np.clip((kept - AUTO_DEEP) / (AUTO_MILD - AUTO_DEEP), 0.0, 1.0))


def mac_costs(dep: Dependency, share: float = 0.25, power: float = 1.0) -> dict[int, float]:
    """Group id -> (MACs saved per channel when `share` of its channels go, the rest of the model dense)
    to the `power`."""
    costs = CostModel(dep)
    total = costs.total_macs
    out = {}
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        if len(free) == 0:
            continue
        n = max(1, int(round(share * len(free))))
        removed = np.zeros(dep.num_channels, dtype=bool)
        removed[free[:n]] = True
        out[grp.id] = (max(total - costs.macs_after(removed), 0.0) / n) ** power
    return out
