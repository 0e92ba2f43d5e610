"""Normalizations: per-channel parameters follow the channel; statistics over an axis freeze it."""

from __future__ import annotations

from onnxprune.couple.ops.stream import stream_links
from onnxprune.couple.vocabulary import Barrier, Rule, Slot, dim, family, norm_axis, rank


class PerChannelNorm(Rule):
    """BatchNormalization / InstanceNormalization: params [C] tie to axis 1; other axes pass through.

    InstanceNormalization's statistics span the spatial axes, which are never slots anyway.
    """

    def __init__(self, ops: tuple[str, ...], params: tuple[int, ...]):
        self.ops = ops
        self.params = params

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor not in (x, y) and slot.axis != 0:
            raise Barrier(f"{node.op} parameter '{slot.tensor}' has no axis {slot.axis}")
        if slot.tensor in (x, y) and slot.axis != 1:
            return family([Slot(x, slot.axis), Slot(y, slot.axis)], dim(g, x, slot.axis))
        members = [Slot(x, 1), Slot(y, 1)] + [Slot(node.inputs[i], 0) for i in self.params
                                               if i < len(node.inputs) and node.inputs[i]]
        return family(members, dim(g, x, 1))


class LayerNormRule(Rule):
    """Axes before `axis` pass through; the normalized axes carry statistics and stay whole."""

    ops = ("LayerNormalization",)

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        r = rank(g, x)
        start = norm_axis(int(node.attrs.get("axis", -1)), r)
        if slot.tensor in (x, y) and slot.axis < start:
            return family([Slot(x, slot.axis), Slot(y, slot.axis)], dim(g, x, slot.axis))
        if g.hidden:  # the residual stream, opt-in (couple/ops/stream.py)
            return stream_links(g, node, slot)
        raise Barrier("LayerNormalization's mean and variance span this axis; removing channels would change them "
                      "(--hidden on prunes the residual stream anyway, with calibration data)")


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    PerChannelNorm(("BatchNormalization",), params=(1, 2, 3, 4)),
    PerChannelNorm(("InstanceNormalization",), params=(1, 2)),
    LayerNormRule(),
)
