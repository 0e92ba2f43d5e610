"""Under a MACs target, a group whose channels save no MACs is never cut.

PP-OCRv4 det's squeeze-excitation blocks (GlobalAveragePool -> 1x1 conv -> ReLU -> 1x1 conv -> gate) have
internal channels that cost almost nothing, on 1x1 pooled maps. A global ranking (each group's scores over
the group's mean) cuts them to a sixth of their width all the same: removing them changes every gate
of the block and buys no MACs toward the target (tools/diag_plan.py ppocr_det --groups). Such groups
are spared after selection; the target search then finds the MACs where they are.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.select.plan import CostModel

FLOOR = 1e-3  # a group whose complete removal saves less than this share of the MACs is costless


def costless_groups(dep: Dependency, floor: float = FLOOR) -> list:
    """Prunable groups whose free channels, all removed, save less than `floor` of the model's MACs."""
    costs = CostModel(dep)
    out = []
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        if grp.prunable == 0 or len(free) == 0:
            continue
        one = np.zeros(dep.num_channels, dtype=bool)
        one[free] = True
        if costs.total_macs - costs.macs_after(one) < floor * costs.total_macs:
            out.append(grp)
    return out


def sparing(dep: Dependency, select):
    """`select(share) -> Plan` with the costless groups' channels kept."""
    groups = costless_groups(dep)
    if not groups:
        return select
    spared = np.concatenate([grp.channels for grp in groups])

    def wrapped(share: float) -> Plan:
        plan = select(share)
        plan.removed[spared] = False
        return plan
    return wrapped
