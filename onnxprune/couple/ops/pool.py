"""Ops that work along some axes and leave the others alone: pools, resize, pad, reductions, softmax."""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Rule, Slot, attr_or_input_ints, dim, family, norm_axis, rank


class PassAxes(Rule):
    """Axes the op leaves untouched map one to one from input 0 to output 0; the rest are barriers.

    `passing(g, node)` returns those input axes; `reason` says why the others stay whole.
    """

    def __init__(self, ops, passing, reason: str):
        self.ops = ops
        self.passing = passing
        self.reason = reason

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor not in (x, y):
            raise Barrier(f"'{slot.tensor}' is a parameter of {node.op}")
        if len(node.outputs) > 1 and any(node.outputs[1:]) and node.op == "MaxPool":
            raise Barrier("MaxPool's Indices output encodes channel positions")
        passing = self.passing(g, node)
        in_axis = slot.axis if slot.tensor == x else _input_axis(passing, slot.axis)
        if in_axis not in passing:
            raise Barrier(self.reason)
        return family([Slot(x, in_axis), Slot(y, passing[in_axis])], dim(g, x, in_axis))


def _input_axis(passing: dict[int, int], out_axis: int) -> int | None:
    for i, o in passing.items():
        if o == out_axis:
            return i
    return None


def _batch_and_channel(g, node):
    return {0: 0, 1: 1}


def _unchanged_dims(g, node):
    """Resize/Pad: axes whose size the op does not change (scale 1, zero padding)."""
    x, y = node.inputs[0], node.outputs[0]
    if node.op == "Pad":
        pads = attr_or_input_ints(g, node, "pads", 1)
        r = rank(g, x)
        if pads is None:
            return {a: a for a in range(r)}
        return {a: a for a in range(r) if pads[a] == 0 and pads[a + r] == 0}
    sx, sy = g.shape(x), g.shape(y)
    if sx is None or sy is None:
        raise Barrier("its shapes are unknown")
    return {a: a for a in range(len(sx)) if sx[a] == sy[a]}


def _kept_by_reduction(g, node):
    x = node.inputs[0]
    r = rank(g, x)
    axes = node.attrs.get("axes")
    if node.op in ("ArgMax", "ArgMin"):
        axes = [int(node.attrs.get("axis", 0))]
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        value = g.const(node.inputs[1])
        if value is None:
            raise Barrier("its axes are computed at run time")
        axes = value.reshape(-1).tolist()
    if axes is None:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return {a: a for a in range(r)}
        axes = list(range(r))
    axes = {norm_axis(int(a), r) for a in axes}
    keep = int(node.attrs.get("keepdims", 1))
    out, j = {}, 0
    for a in range(r):
        if a in axes:
            j += keep
            continue
        out[a] = j
        j += 1
    return out


def _softmax_free(g, node):
    x = node.inputs[0]
    r = rank(g, x)
    axis = norm_axis(int(node.attrs.get("axis", -1 if g.opset >= 13 else 1)), r)
    if g.opset < 13:  # older softmax flattens everything from `axis` into one row
        return {a: a for a in range(axis)}
    return {a: a for a in range(r) if a != axis}


class ResizeRule(PassAxes):
    def update(self, ctx, node):
        sizes_index = 3
        name = node.input(sizes_index)
        if name is None or ctx.g.const(name) is None:
            return
        sizes = np.array(ctx.g.const(name)).copy()
        y = node.outputs[0]
        for axis in range(len(sizes)):
            sizes[axis] = ctx.new_dim(y, axis)
        ctx.set_input(node, sizes_index, sizes)


POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "MaxRoiPool")


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    PassAxes(POOLS, _batch_and_channel, "pooling mixes the spatial axes"),
    ResizeRule(("Resize", "Upsample"), _unchanged_dims, "Resize rescales this axis"),
    PassAxes(("Pad",), _unchanged_dims, "Pad changes the length of this axis"),
    PassAxes(("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"), _kept_by_reduction, "the op reduces over this axis"),
    PassAxes(("Softmax", "LogSoftmax", "Hardmax"), _softmax_free, "softmax normalizes over this axis; removing entries would change every output"),
)
