"""A Plan: which channels of the coupled groups are removed, and its JSON form (anchored by parameter
names, so a plan survives a re-export of the same model)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.vocabulary import Slot
from onnxprune.couple.plan_check import check_plan_document
from onnxprune.errors import BadInputError

PLAN_SCHEMA = "onnxprune.plan/1"


@dataclass
class Plan:
    """The channels to remove (a bool per channel of `dep`) and how the choice was made."""

    dep: Dependency
    removed: np.ndarray
    options: dict = field(default_factory=dict)

    @property
    def kept_per_group(self) -> list[tuple[int, int]]:
        """(kept, total) channels per group."""
        return [(int((~self.removed[grp.channels]).sum()), grp.size) for grp in self.dep.groups]

    def summary(self) -> dict:
        groups = []
        for grp, (kept, total) in zip(self.dep.groups, self.kept_per_group):
            groups.append({"group": grp.id, "channels": total, "kept": kept, "frozen": bool(grp.frozen.all()),
                           "slots": [str(s) for s in grp.slots[:4]] + (["..."] if len(grp.slots) > 4 else [])})
        summary = {"channels": int(self.dep.num_channels), "removed": int(self.removed.sum()),
                   "groups": len(groups), "pruned_groups": sum(1 for g in groups if g["kept"] < g["channels"]),
                   "per_group": groups}
        if self.dep.graph.hidden:  # the residual-stream width was pruned: its size before and after
            from onnxprune.couple.hidden import hidden_sizes
            summary["hidden"] = hidden_sizes(self.dep, self.removed)
        if "measured_latency_ratio" in self.options:  # a latency target: what the model predicted, what was measured
            summary["latency"] = {k: self.options[k] for k in ("target_latency", "predicted_latency_ratio",
                                                               "measured_latency_ratio", "latency_attempts",
                                                               "allocation", "allocation_macs_kept")
                                  if k in self.options}
        return summary

    def to_json(self) -> dict:
        """Kept indices per group, named by parameter slots so a new export of the model can reuse them."""
        groups = []
        for grp in self.dep.groups:
            if not self.removed[grp.channels].any():
                continue
            anchors = [s for s in grp.slots if s.tensor in self.dep.graph.constants] or grp.slots
            anchor = anchors[0]
            kept = np.flatnonzero(~self.removed[self.dep.elements(anchor)])
            groups.append({"anchor": {"tensor": anchor.tensor, "axis": anchor.axis, "size": self.dep.slot_size(anchor)},
                           "kept": kept.tolist()})
        return {"schema": PLAN_SCHEMA, "options": self.options, "groups": groups}


def plan_from_json(dep: Dependency, data: dict) -> Plan:
    """Re-apply a saved plan to a (possibly re-exported) model with the same parameter names."""
    check_plan_document(data)
    if data.get("schema") != PLAN_SCHEMA:
        raise BadInputError(f"not an onnxprune plan (schema {data.get('schema')!r}, expected {PLAN_SCHEMA})")
    removed = np.zeros(dep.num_channels, dtype=bool)
    for entry in data["groups"]:
        a = entry["anchor"]
        slot = Slot(a["tensor"], int(a["axis"]))
        if slot not in dep.slot_index or dep.slot_size(slot) != int(a["size"]):
            raise BadInputError(f"plan names {a['tensor']}[axis {a['axis']}] of size {a['size']}, "
                                "which this model does not have as a prunable slot")
        elements = dep.elements(slot)
        keep = np.zeros(len(elements), dtype=bool)
        keep[np.asarray(entry["kept"], dtype=np.int64)] = True
        if dep.channel_frozen[elements[~keep]].any():
            raise BadInputError(f"plan removes frozen channels of {a['tensor']}")
        removed[elements[~keep]] = True
        removed[elements[keep]] = False
    return Plan(dep, removed, {**data.get("options", {}), "from_plan": True})


def load_plan_file(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read plan ({exc})") from None
