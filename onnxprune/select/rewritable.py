"""Groups the rewrite cannot follow, kept whole instead of failing the run.

The analysis links a group through a Reshape whose shape input is computed at run time; whether the
rewrite can patch that shape is only known when a plan removes channels: an entry such as
`batch * heads` (torch's MultiheadAttention, khmersm) changes with the batch, so no constant added
to it gives `batch * (heads - 1)`. Any plan cutting such a group exited 2 on a valid model (a latency
target's uniform profile widths on khmersm; a MACs or ratio target on the same structure where the
heads are not input encodings). Before selection, a trial rewrite of the deepest uniform plan names
the node that fails, the groups with removed channels around it are kept whole (selection then
spends the target on the others), and the trial repeats.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import onnx

from onnxprune.apply.rewrite import RewriteError, apply_plan
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.load.spill import model_bytes
from onnxprune.select.latency_model import GRID
from onnxprune.select.plan import select_uniform

log = logging.getLogger("onnxprune")

TRIAL_BYTES = 256 << 20  # models up to this size get the trial rewrite before any selection; larger ones
# only before a latency target's profile (which builds uniform prunings anyway): a trial copies a share
# of the weights, seconds and memory a MACs or ratio target on a big model need not spend


def groups_at(dep: Dependency, node_name: str, removed: np.ndarray) -> set[int]:
    """Groups that lose channels in `removed` and have a slot on an input or output of `node_name`."""
    node = next((n for n in dep.graph.nodes if n.name == node_name), None)
    if node is None:
        return set()
    tensors = {t for t in [*node.inputs, *node.outputs] if t}
    found = set()
    for slot in dep.slots:
        if slot.tensor in tensors:
            channels = np.unique(dep.elements(slot))
            found.update(int(g) for g in np.unique(dep.channel_group[channels[removed[channels]]]))
    return found


def unrewritable_groups(dep: Dependency, skip: set[int], round_to: int = 1, share: float = max(GRID),
                        build: Callable[[Plan], onnx.ModelProto] = apply_plan, always: bool = True) -> set[int]:
    """The groups (beyond `skip`) a uniform pruning at `share` cannot be rewritten with: each failing
    node's groups are added and the trial repeats until the plan applies (or fails for another
    reason: the trial never fails a run itself). Unless `always`, models over TRIAL_BYTES are not tried (nothing found)."""
    found: set[int] = set()
    if not always and model_bytes(dep.graph.model) > TRIAL_BYTES:
        return found
    zeros = np.zeros(dep.num_channels)
    while True:
        plan = select_uniform(dep, zeros, share, round_to, skip=set(skip) | found)
        if not plan.removed.any():
            return found
        try:
            build(plan)
            return found
        except RewriteError as exc:
            around = groups_at(dep, exc.node, plan.removed) - found
            if not around:  # not a group's doing: the trial found what it could (a plan meets it or not)
                return found
            log.warning("%s; the %d group(s) there are kept whole", exc, len(around))
            found |= around
        except Exception:  # noqa: BLE001  (the trial is a precaution: it never fails a run the plan would not)
            return found
