"""Whether this run prunes the residual-stream (hidden) width, and the analysis that goes with it.

    working, dep = analyse_width(working, input_shapes, options, has_data)

`--hidden on` carries the stream through every norm (couple/ops/stream.py); it needs calibration
data, because the norms' statistics change and importance and recovery come from activations.
`auto` (the default) turns it on only with calibration data and a MACs or parameter target that
the other groups cannot reach even when each loses as much as the caps allow. With the stream on,
graph outputs that carry it get a restore projection (apply/restore.py), so the interface keeps
its width while the stream shrinks inside.
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import onnx

from onnxprune.apply.restore import add_restores
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.couple.ops import Slot
from onnxprune.couple.plan import load_plan_file
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.options import DEFAULT_ROUND_TO, PruneOptions
from onnxprune.select.plan import CostModel, rounded_up
from onnxprune.select.refine import least_widths
from onnxprune.select.width_step import group_step

log = logging.getLogger("onnxprune")


def reachable(dep: Dependency, options: PruneOptions) -> float:
    """The smallest fraction of the target's cost (MACs or params) the groups can reach when each
    loses as many channels as the caps allow, its kept width rounded up to its step as the selectors
    round it (select/plan.capped_keep; PP-OCRv4 det's floor is 0.345 with rounding, 0.265 without)."""
    removed = np.zeros(dep.num_channels, dtype=bool)
    least = least_widths(dep, options.max_layer_ratio, options.min_channels)
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        kept = rounded_up(grp.size, least[grp.id], group_step(dep, grp, options.round_to or DEFAULT_ROUND_TO))
        cap = min(grp.size - kept, len(free))
        if cap > 0:
            removed[free[:cap]] = True
    costs = CostModel(dep)
    if options.target.kind == "macs":
        return costs.macs_after(removed) / max(costs.total_macs, 1e-30)
    return costs.params_after(removed) / max(costs.total_params, 1e-30)


def _plan_names_unknown_slots(dep: Dependency, plan) -> bool:
    """Whether a saved plan anchors a group on a slot this analysis does not have (a stream group)."""
    doc = plan if isinstance(plan, dict) else load_plan_file(plan)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        return False  # a malformed plan: plan_from_json names what is wrong with it
    anchors = [grp.get("anchor") for grp in doc["groups"] if isinstance(grp, dict)]
    return any(Slot(a["tensor"], a.get("axis", -1)) not in dep.slot_index
               for a in anchors if isinstance(a, dict) and isinstance(a.get("tensor"), str)
               and isinstance(a.get("axis", -1), int))


def wants_hidden(dep: Dependency, options: PruneOptions, has_data: bool) -> bool:
    """The --hidden decision for this model and target (see the module notes); a saved plan turns it
    on (auto) when it names slots only the stream analysis has, and needs no data to be re-applied."""
    if options.hidden == "off":
        return False
    if options.target.kind == "plan":
        return options.hidden == "on" or _plan_names_unknown_slots(dep, options.target.plan)
    if options.hidden == "on":
        if not has_data:
            raise BadInputError("--hidden on needs calibration data: pass --calib DATA.npz")
        return True
    if not has_data or options.target.kind not in ("macs", "params"):
        return False
    floor = reachable(dep, options)
    if floor <= options.target.value:
        return False
    log.info("the target %.3f is out of reach without the hidden width (at most %.3f): pruning it too",
             options.target.value, floor)
    return True


def analyse_width(working: onnx.ModelProto, input_shapes: Mapping | None, options: PruneOptions,
                  has_data: bool) -> tuple[onnx.ModelProto, Dependency]:
    """The groups of `working`, with the residual stream among them when the run prunes it (then
    `working` may come back with restore projections at its outputs)."""
    graph = ModelGraph(working, input_shapes)
    dep = build_dependency(graph)
    if not wants_hidden(dep, options, has_data):
        return working, dep
    dep = build_dependency(graph, hidden=True)
    restored = add_restores(working, dep)
    if restored is None:
        return working, dep
    return restored, build_dependency(ModelGraph(restored, input_shapes), hidden=True)
