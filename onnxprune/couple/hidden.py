"""Which groups are the residual stream (hidden width), and its size before and after a plan.

A stream group is one that holds the normalized axis of a norm (couple/ops/stream.py NORMS, or the
axis a decomposed norm's ReduceMean averages over): with
hidden-width pruning on, the whole residual stream (embeddings, residual Adds, every norm, every
projection reading or writing it) is one such group per stream.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency, Group
from onnxprune.couple.ops import Slot, rule_for
from onnxprune.couple.ops.stream import NORMS, norm_spec


def _norm_param_slots(dep: Dependency) -> set[Slot]:
    """Norm parameters on their hidden axis, and the last axis read by ReduceMean (decomposed norms)."""
    g, found = dep.graph, set()
    for node in g.nodes:
        if node.op == "ReduceMean" and g.shape(node.inputs[0]):
            found.add(Slot(node.inputs[0], len(g.shape(node.inputs[0])) - 1))
        key = node.op if node.proto.domain in ("", "ai.onnx") else f"{node.proto.domain}.{node.op}"
        if key not in NORMS or rule_for(node) is None:
            continue
        for i in norm_spec(node).params:
            t = node.input(i)
            if t and g.shape(t):
                found.add(Slot(t, len(g.shape(t)) - 1))
    return found


def stream_groups(dep: Dependency) -> list[Group]:
    """The groups that carry a norm's per-channel parameters: the residual stream(s)."""
    params = _norm_param_slots(dep)
    return [grp for grp in dep.groups if any(s in params for s in grp.slots)]


def hidden_sizes(dep: Dependency, removed: np.ndarray) -> list[dict]:
    """Per stream group: its width before and after `removed` (only groups wider than one channel)."""
    return [{"group": grp.id, "before": grp.size, "after": int((~removed[grp.channels]).sum())}
            for grp in stream_groups(dep) if grp.size > 1]
