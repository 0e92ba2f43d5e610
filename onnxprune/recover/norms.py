"""Norm recovery for hidden-width plans: keep each norm's output at its dense scale and offset.

A norm that loses stream channels computes its statistics over the kept ones: its variance (and a
LayerNorm's mean) move, so every kept output is scaled (and shifted) away from the dense value. From
the dense calibration moments of the norm's input (per channel E[x], E[x^2]), the scale is put back
into the scale parameter, gamma' = gamma * sigma_kept / sigma_all, and the shift into the bias,
beta' = beta + gamma * (mu_kept - mu_all) / sigma_all (LayerNorm only; RMSNorm has no mean). These are
first-order (moments averaged over tokens), cheap, and run before the sequential least squares, which
then solves every linear consumer on the corrected norms' outputs.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.ops import Slot
from onnxprune.score.calibration import Statistics

# op key -> (index of the tensor whose moments are the norm's input, index of gamma, index of beta, centred);
# the index is an input (>= 0) or an output (~i); None where the op has no such input
NORM_INPUTS = {
    "LayerNormalization": (0, 1, 2, True),
    "SimplifiedLayerNormalization": (0, 1, None, False),
    "com.microsoft.SimplifiedLayerNormalization": (0, 1, None, False),
    "com.microsoft.SkipLayerNormalization": (~3, 2, 3, True),  # input_skip_bias_sum, when exported
    "com.microsoft.SkipSimplifiedLayerNormalization": (~3, 2, None, False),
}


def _key(node) -> str:
    return node.op if node.proto.domain in ("", "ai.onnx") else f"{node.proto.domain}.{node.op}"


def _moment_tensor(node, index: int) -> str | None:
    if index >= 0:
        return node.input(index)
    i = ~index
    return node.outputs[i] if i < len(node.outputs) and node.outputs[i] else None


def norm_inputs(dep: Dependency) -> list[Slot]:
    """The hidden axis of each norm's input, whose moments the recovery reads."""
    g, found = dep.graph, []
    for node in g.nodes:
        spec = NORM_INPUTS.get(_key(node))
        t = _moment_tensor(node, spec[0]) if spec else None
        if t and g.shape(t) and Slot(t, len(g.shape(t)) - 1) in dep.slot_index:
            found.append(Slot(t, len(g.shape(t)) - 1))
    return found


def wanted(dep: Dependency) -> dict[tuple[str, int], bool]:
    """The statistics norm recovery reads (no Grams); none unless the stream is pruned."""
    return {(s.tensor, s.axis): False for s in norm_inputs(dep)} if dep.graph.hidden else {}


def norm_overrides(dep: Dependency, removed: np.ndarray, stats: Statistics | None) -> dict[str, np.ndarray]:
    """Dense-shaped gamma (and beta) of every norm that loses channels, rescaled and shifted."""
    g, out = dep.graph, {}
    if stats is None or not g.hidden:
        return out
    for node in g.nodes:
        spec = NORM_INPUTS.get(_key(node))
        x = _moment_tensor(node, spec[0]) if spec else None
        if x is None or not g.shape(x):
            continue
        slot = Slot(x, len(g.shape(x)) - 1)
        st = stats.get(slot.tensor, slot.axis)
        gamma = node.input(spec[1])
        if slot not in dep.slot_index or st is None or not st.count or gamma is None or g.const(gamma) is None:
            continue
        keep = ~removed[dep.elements(slot)]
        if keep.all() or not keep.any():
            continue
        m1, m2 = st.sum / st.count, st.sq_sum / st.count
        eps = float(node.attrs.get("epsilon", 1e-5))
        centred = spec[3]
        var_all = m2.mean() - (m1.mean() ** 2 if centred else 0.0)
        var_kept = m2[keep].mean() - (m1[keep].mean() ** 2 if centred else 0.0)
        scale = np.sqrt(max(var_kept, 0.0) + eps) / np.sqrt(max(var_all, 0.0) + eps)
        dense_gamma = g.const(gamma).astype(np.float64)
        out[gamma] = (dense_gamma * scale).astype(g.const(gamma).dtype)
        beta = node.input(spec[2]) if spec[2] is not None else None
        if centred and beta is not None and g.const(beta) is not None:
            shift = (m1[keep].mean() - m1.mean()) / np.sqrt(max(var_all, 0.0) + eps)
            out[beta] = (g.const(beta) + dense_gamma * shift).astype(g.const(beta).dtype)
    return out
