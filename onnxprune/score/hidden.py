"""Importance of residual-stream channels, Minitron-style: mean |activation| after each norm.

Minitron (Muralidharan et al. 2024) ranks the embedding (hidden) channels by the magnitude of the
LayerNorm outputs over calibration data, summed over layers. Here each norm's output (the stream
outputs of couple/ops/stream.py NORMS; for decomposed norms, the tensor their ReduceMean averages)
contributes its per-channel mean |activation|, normalized by its mean so every layer counts alike;
the stream group's scores are replaced by that sum. Other groups keep the criterion's scores (the
global selection normalizes each group by its own mean, so the two scales never meet).
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.hidden import stream_groups
from onnxprune.couple.ops import Slot
from onnxprune.couple.ops.stream import NORMS, norm_spec
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import accumulate


def norm_outputs(dep: Dependency) -> list[Slot]:
    """The hidden axis of every norm's output (and of every decomposed norm's averaged tensor)."""
    g, found = dep.graph, []
    for node in g.nodes:
        key = node.op if node.proto.domain in ("", "ai.onnx") else f"{node.proto.domain}.{node.op}"
        tensors = [node.outputs[norm_spec(node).outputs[0]]] if key in NORMS else []
        tensors += [node.inputs[0]] if node.op == "ReduceMean" else []
        found += [Slot(t, len(g.shape(t)) - 1) for t in tensors if g.shape(t)]
    return [s for s in found if s in dep.slot_index]


def wanted(dep: Dependency) -> dict[tuple[str, int], bool]:
    """The statistics the stream importance reads (no Grams)."""
    return {(s.tensor, s.axis): False for s in norm_outputs(dep)} if dep.graph.hidden else {}


def with_stream_importance(dep: Dependency, stats: Statistics | None, scores: np.ndarray) -> np.ndarray:
    """`scores` with every stream group's channels re-scored by their mean |activation| after the norms."""
    if stats is None or not dep.graph.hidden:
        return scores
    members = [(s, st.mean_abs) for s in norm_outputs(dep)
               if (st := stats.get(s.tensor, s.axis)) is not None and st.count]
    if not members:
        return scores
    stream = accumulate(dep, members)
    out = scores.copy()
    for grp in stream_groups(dep):
        if stream[grp.channels].any():  # on the group's own scale, so criteria ranked as they are still compare
            own = float(np.mean(scores[grp.channels]))
            mean = float(np.mean(stream[grp.channels]))
            out[grp.channels] = stream[grp.channels] * (own / mean if own > 0 and mean > 0 else 1.0)
    return out
