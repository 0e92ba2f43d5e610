"""Ops that pick or join parts of tensors: the gradient puts dY back where the parts came from."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.autodiff.context import attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


@GRADIENTS.register("Concat")
def concat(ctx, node, dys, needs):
    rank = ctx.rank(node.outputs[0])
    axis = int(attr(node, "axis")) % rank
    inputs = node.inputs
    if axis == 0:  # the batch axis may vary: read the sizes at run time
        parts = [ctx.emit("Slice", [ctx.shape_of(x), ctx.ints([0]), ctx.ints([1])]) for x in inputs]
        sizes = ctx.emit("Concat", parts, axis=0)
    else:
        sizes = ctx.ints([ctx.shape(x)[axis] for x in inputs])
    if len(inputs) == 1:
        return [dys[0]]
    grads = ctx.emit("Split", [dys[0], sizes], outputs=len(inputs), axis=axis)
    return [g if need else None for g, need in zip(grads, needs)]


@GRADIENTS.register("Split", inputs=(0,))
def split(ctx, node, dys, needs):
    x = node.inputs[0]
    axis = int(attr(node, "axis", 0)) % ctx.rank(x)
    parts = [dy if dy else ctx.zeros_like(out) for dy, out in zip(dys, node.outputs) if out]
    return [ctx.emit("Concat", parts, axis=axis) if len(parts) > 1 else parts[0]]


def _slice_indices(ctx, node) -> dict[int, list[int]]:
    """Per sliced axis, the input positions the output takes, in output order."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    starts = ctx.ints_of(node.input(1), "starts", node)
    ends = ctx.ints_of(node.input(2), "ends", node)
    axes = ctx.ints_of(node.input(3), "axes", node) or list(range(len(starts)))
    steps = ctx.ints_of(node.input(4), "steps", node) or [1] * len(starts)
    picked = {}
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= len(shape)
        # ONNX clamps starts/ends exactly as Python slicing does
        picked[axis] = list(range(shape[axis])[slice(start, end, step)])
    return picked


def _check_slice(ctx, node):
    try:
        _slice_indices(ctx, node)
    except Exception as exc:  # a run-time computed start or end
        return str(exc)
    return None


@GRADIENTS.register("Slice", inputs=(0,), check=_check_slice)
def slice_(ctx, node, dys, needs):
    x, dy = node.inputs[0], dys[0]
    shape = ctx.shape(x)
    picked = _slice_indices(ctx, node)
    contiguous = all(len(p) < 2 or np.all(np.diff(p) == 1) for p in picked.values())
    if contiguous:  # zero-pad dY back to x's extent
        begin = [0] * len(shape)
        end = [0] * len(shape)
        for axis, p in picked.items():
            if p:
                begin[axis], end[axis] = p[0], shape[axis] - p[-1] - 1
        return [ctx.emit("Pad", [dy, ctx.ints(begin + end)])]
    grad, rank = dy, len(shape)
    for axis, p in picked.items():  # strided or reversed: a 0/1 selection matrix per axis
        matrix = np.zeros((len(p), shape[axis]))
        matrix[np.arange(len(p)), p] = 1.0
        grad = ctx.axis_adjoint(grad, rank, axis, matrix, x)
    return [grad]


@GRADIENTS.register("Gather", inputs=(0,))
def gather(ctx, node, dys, needs):
    # scatter-add dY rows back into a zero tensor shaped like the data, along `axis`
    data, indices = node.inputs
    rank = ctx.rank(data)
    axis = int(attr(node, "axis", 0)) % rank
    tail = ctx.emit("Slice", [ctx.shape_of(data), ctx.ints([axis + 1]), ctx.ints([rank])])  # at run time: the
    # dims after `axis` may hold the batch, and the graph may be analysed at another batch than it runs
    updates = ctx.emit("Reshape", [dys[0], ctx.emit("Concat", [ctx.ints([0] * axis + [-1]), tail], axis=0)])
    flat = ctx.emit("Reshape", [indices, ctx.ints([1] * axis + [-1] + [1] * (rank - axis - 1))])
    if ctx.elem_type(indices) != onnx.TensorProto.INT64:
        flat = ctx.emit("Cast", [flat], to=onnx.TensorProto.INT64)
    spread = ctx.emit("Expand", [flat, ctx.shape_of(updates)])
    return [ctx.emit("ScatterElements", [ctx.zeros_like(data), spread, updates], axis=axis, reduction="add"), None]


def _check_pad(ctx, node):
    mode = attr(node, "mode", "constant")
    if mode != "constant":
        return f"Pad mode '{mode}' is not supported (only constant)"
    if ctx.g.static_ints(node.input(1)) is None:
        return "Pad with run-time computed pads is not supported"
    return None


@GRADIENTS.register("Pad", inputs=(0,), check=_check_pad)
def pad(ctx, node, dys, needs):
    # padding by -pads crops what Pad added (and zero-fills what a negative pad cropped)
    pads = ctx.ints_of(node.input(1), "pads", node)
    inputs = [dys[0], ctx.ints([-p for p in pads])]
    if node.input(3):
        inputs += ["", node.input(3)]
    return [ctx.emit("Pad", inputs)]
