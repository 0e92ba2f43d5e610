"""Selection: which channels each group keeps, as a Plan that the rewrite applies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dependency import Dependency
from .errors import BadInputError


@dataclass
class Plan:
    """The channels to remove (a bool per channel of `dep`) and how the choice was made."""

    dep: Dependency
    removed: np.ndarray
    options: dict

    @property
    def kept_per_group(self) -> list[tuple[int, int]]:
        """(kept, total) channels per group."""
        return [(int((~self.removed[grp.channels]).sum()), grp.size) for grp in self.dep.groups]

    def summary(self) -> dict:
        groups = []
        for grp, (kept, total) in zip(self.dep.groups, self.kept_per_group):
            groups.append({"group": grp.id, "channels": total, "kept": kept, "frozen": bool(grp.frozen.all()),
                           "slots": [str(s) for s in grp.slots[:4]] + (["..."] if len(grp.slots) > 4 else [])})
        return {"channels": int(self.dep.num_channels), "removed": int(self.removed.sum()),
                "groups": len(groups), "pruned_groups": sum(1 for g in groups if g["kept"] < g["channels"]),
                "per_group": groups}


def rounded_keep(total: int, ratio: float, round_to: int) -> int:
    """Channels to keep of `total` at `ratio` removed, rounded to a multiple of `round_to`.

    Groups no wider than `round_to` are rounded to single channels; nothing is ever emptied.
    """
    step = round_to if total > round_to else 1
    keep = int(round(total * (1.0 - ratio) / step)) * step
    return int(min(max(keep, step, 1), total))


def select_uniform(dep: Dependency, scores: np.ndarray, ratio: float, round_to: int = 1) -> Plan:
    """Local scope: every unfrozen group loses `ratio` of its channels, lowest scores first."""
    if not 0.0 < ratio < 1.0:
        raise BadInputError(f"--ratio must be strictly between 0 and 1, got {ratio}")
    if round_to < 1:
        raise BadInputError(f"--round-to must be a positive integer, got {round_to}")
    removed = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        if grp.prunable == 0:
            continue
        keep = rounded_keep(grp.size, ratio, round_to)
        drop = grp.size - keep
        candidates = grp.channels[~grp.frozen]
        drop = min(drop, len(candidates))
        if drop <= 0:
            continue
        order = np.argsort(scores[candidates], kind="stable")
        removed[candidates[order[:drop]]] = True
    return Plan(dep, removed, {"ratio": ratio, "round_to": round_to, "scope": "local"})
