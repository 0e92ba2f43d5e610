"""Rules for the less common ops: group norm, depth/space blocks, Einsum, QDQ, LRN, ConstantOfShape.

Also explicit barriers, with their reasons, for ops whose output length depends on data.
"""

from __future__ import annotations

import re

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, family, identity, indexed, merged, norm_axis, rank
from onnxprune.couple.ops.pool import PassAxes
from onnxprune.couple.ops.shape_ops import write_shape_input
from onnxprune.graph.static_tensors import is_static


# ---- normalization across channels -------------------------------------------------------------------

class GroupNormRule(Rule):
    """Statistics span each group's channels, so only whole groups can go (that keeps them exact).

    Scale and bias are per channel (opset 21) or per group (opset 18); `num_groups` is rewritten.
    """

    ops = ("GroupNormalization",)

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor in (x, y) and slot.axis == 0:
            return [identity(Slot(x, 0), Slot(y, 0), dim(g, x, 0))]
        if slot.axis != (1 if slot.tensor in (x, y) else 0):
            raise Barrier("the group statistics span this axis; removing entries would change them")
        channels, groups = dim(g, x, 1), int(node.attrs["num_groups"])
        per_group = channels // groups
        c = np.arange(channels)
        links = [identity(Slot(x, 1), Slot(y, 1), channels),
                 indexed(Slot(x, 1), Slot(x, 1), c, c - c % per_group)]  # a group goes whole
        for p in node.inputs[1:3]:
            if p and dim(g, p, 0) == channels:
                links.append(identity(Slot(p, 0), Slot(x, 1), channels))
            elif p:
                links.append(merged(Slot(p, 0), Slot(x, 1), (groups, per_group), 0))
        return links

    def update(self, ctx, node):
        x = node.inputs[0]
        per_group = ctx.old_dim(x, 1) // int(node.attrs["num_groups"])
        groups = ctx.new_dim(x, 1) // per_group
        if groups != int(node.attrs["num_groups"]):
            ctx.set_attr(node, "num_groups", groups)


def _batch_only(g, node):
    return {0: 0}


# LRN's sum of squares runs over neighbouring channels: a removed channel changes its neighbours.


# ---- depth <-> space ---------------------------------------------------------------------------------

class DepthSpaceRule(Rule):
    """DepthToSpace/SpaceToDepth: a channel of the shallow side owns block*block channels of the deep one.

    DCR (and SpaceToDepth) order the deep channels as (block row, block col, channel): channel c
    is deep channels c + k*C. CRD orders them (channel, block row, block col): a block of b*b.
    """

    ops = ("DepthToSpace", "SpaceToDepth")

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.axis == 0:
            return [identity(Slot(x, 0), Slot(y, 0), dim(g, x, 0))]
        if slot.axis != 1:
            raise Barrier(f"{node.op} moves channel blocks into this spatial axis")
        deep, shallow = (x, y) if node.op == "DepthToSpace" else (y, x)
        blocks = int(node.attrs["blocksize"]) ** 2
        channels = dim(g, shallow, 1)
        mode = node.attrs.get("mode", b"DCR")
        if (mode.decode() if isinstance(mode, bytes) else mode) == "CRD":
            return [merged(Slot(shallow, 1), Slot(deep, 1), (channels, blocks), 0)]
        return [merged(Slot(shallow, 1), Slot(deep, 1), (blocks, channels), 1)]




# ---- Einsum ------------------------------------------------------------------------------------------

def _einsum_labels(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Per operand and for the output, one label per axis; ellipsis axes get labels '.k' (k from the right)."""
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise Barrier("its equation does not match its inputs")

    def expand(term: str, r: int) -> list[str]:
        if "..." not in term:
            return list(term)
        before, after = term.split("...")
        n = r - len(before) - len(after)
        return list(before) + [f".{k}" for k in range(n - 1, -1, -1)] + list(after)

    operands = [expand(t, r) for t, r in zip(terms, ranks)]
    ellipsis = max((sum(1 for l in ops if l.startswith(".")) for ops in operands), default=0)
    if "->" in equation:
        out = expand(rhs, len(rhs.replace("...", "")) + ellipsis)
    else:  # implicit output: ellipsis first, then the letters used once, sorted
        letters = re.findall(r"[A-Za-z]", lhs)
        out = [f".{k}" for k in range(ellipsis - 1, -1, -1)] + sorted(l for l in set(letters) if letters.count(l) == 1)
    return operands, out


class EinsumRule(Rule):
    """An index letter is one axis wherever it appears; removing its value v removes it everywhere.

    Output letters tie the output to the operands, contracted letters tie the operands together;
    both are exact. A letter repeated within one operand (a diagonal or trace) is a barrier.
    """

    ops = ("Einsum",)

    def _axes(self, g, node) -> list[tuple[str, list[str]]]:
        inputs = [t for t in node.inputs if t]
        operands, out = _einsum_labels(node.attrs["equation"].decode() if isinstance(node.attrs["equation"], bytes)
                                       else node.attrs["equation"], [rank(g, t) for t in inputs])
        return list(zip(inputs, operands)) + [(node.outputs[0], out)]

    def links(self, g, node, slot):
        axes = self._axes(g, node)
        label = next((labels[slot.axis] for t, labels in axes if t == slot.tensor), None)
        if label is None:
            raise Barrier("its equation has no such axis")
        n = dim(g, slot.tensor, slot.axis)
        members = []
        for t, labels in axes:
            hits = [a for a, l in enumerate(labels) if l == label]
            if len(hits) > 1:
                raise Barrier(f"index '{label}' repeats within one operand (a diagonal or trace)")
            if hits and dim(g, t, hits[0]) == n:  # a size-1 ellipsis axis only broadcasts
                members.append(Slot(t, hits[0]))
        return family(members, n)

    def seeds(self, g, node):
        axes = self._axes(g, node)
        weight_labels = {l for t, labels in axes[:-1] if is_static(g, t) for l in labels}
        return [Slot(t, a) for t, labels in axes if not is_static(g, t)
                for a, l in enumerate(labels) if l in weight_labels]




# ---- quantization --------------------------------------------------------------------------------------

class QDQRule(Rule):
    """QuantizeLinear/DequantizeLinear: every axis passes through; per-channel scales and zero points
    ([C] on `axis`) follow that axis, so a QDQ model stays QDQ. Per-tensor scalars carry nothing.
    """

    ops = ("QuantizeLinear", "DequantizeLinear")

    def links(self, g, node, slot):
        x, scale, y = node.inputs[0], node.inputs[1], node.outputs[0]
        params = [t for t in node.inputs[1:3] if t]
        r = rank(g, x)
        axis = norm_axis(int(node.attrs.get("axis", 1)), r) if r else 0
        shape = g.shape(scale)
        if shape is None:
            raise Barrier("the shape of its scale is unknown")
        blocked = int(node.attrs.get("block_size", 0)) > 0  # opset 21: one scale per block of `axis`
        per_channel = not blocked and len(shape) == 1 and shape[0] > 1
        if per_channel and not 0 <= axis < r:
            raise Barrier(f"its per-channel axis {axis} does not exist in a rank-{r} input")
        if slot.tensor in params:
            if not per_channel or slot.axis != 0:
                raise Barrier("a per-tensor or blocked scale carries no channels of its own")
            out_axis = axis
        else:
            out_axis = slot.axis
        n = dim(g, x, out_axis)
        if blocked and out_axis == axis:
            raise Barrier("blocked quantization shares one scale across a block of channels")
        members = [Slot(x, out_axis), Slot(y, out_axis)]
        if per_channel and out_axis == axis:
            members += [Slot(p, 0) for p in params]
        return family(members, n)




# ---- computed constants --------------------------------------------------------------------------------

class ConstantOfShapeRule(Rule):
    """Its output is one value everywhere, so any axis may shrink if its shape entry can be rewritten."""

    ops = ("ConstantOfShape",)

    def links(self, g, node, slot):
        value = g.static_value(node.inputs[0])
        if value is None or slot.axis >= np.asarray(value[1]).size or not np.asarray(value[1]).reshape(-1)[slot.axis]:
            raise Barrier(f"its shape entry for axis {slot.axis} is computed at run time")
        return []

    def update(self, ctx, node):
        write_shape_input(ctx, node, 0, node.outputs[0])




class Fixed(Rule):
    """An op whose outputs no rule can map: every slot it touches is frozen, with `reason`."""

    def __init__(self, ops: tuple[str, ...], reason: str):
        self.ops = ops
        self.reason = reason

    def links(self, g, node, slot) -> list[Link]:
        raise Barrier(self.reason)


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    PassAxes(("LRN",), _batch_only, "LRN normalizes each channel by its neighbours; removing one changes the others"),
    GroupNormRule(),
    DepthSpaceRule(),
    EinsumRule(),
    QDQRule(),
    ConstantOfShapeRule(),
    Fixed(("NonZero", "Unique", "Compress", "NonMaxSuppression"), "the length of its output depends on the data"),
    Fixed(("Range",), "its length is computed from scalar inputs"),
)
