"""Resize: linear in its input and separable per axis, so its adjoint is one matrix per axis.

Instead of re-deriving every coordinate mode (half_pixel, align_corners, nearest rounding, ...),
each axis's matrix is read off ONNX Runtime at build time: resize an identity basis laid along
the batch axis, and column i of the result is where input position i goes. The gradient is then
a MatMul with that matrix's transpose, exact for nearest, linear and cubic alike.
"""

from __future__ import annotations

import numpy as np

from onnxprune.autodiff.context import attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


def _targets(ctx, node) -> tuple[dict[int, float], dict[int, int]]:
    """Per resized axis, the scale (if given) and the output size."""
    x, y = node.inputs[0], node.outputs[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    rank = len(xs)
    axes = [int(a) % rank for a in attr(node, "axes", list(range(rank)))]
    scales_in = node.input(2)
    scales = ctx.g.const(scales_in) if scales_in else None
    scale_of = {}
    if scales is not None and scales.size:
        scale_of = {a: float(s) for a, s in zip(axes, scales.reshape(-1))}
    sizes = {a: ys[a] for a in range(rank) if xs[a] != ys[a] or scale_of.get(a, 1.0) != 1.0}
    return {a: scale_of[a] for a in sizes if a in scale_of}, sizes


def _check_resize(ctx, node):
    mode = attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode == "tf_crop_and_resize":
        return "Resize with tf_crop_and_resize (not linear: it extrapolates a constant) is not supported"
    if attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "Resize with keep_aspect_ratio_policy other than stretch is not supported"
    if node.input(2) and ctx.g.const(node.input(2)) is None:
        return "Resize with run-time computed scales is not supported"
    scales, sizes = _targets(ctx, node)
    if 0 in sizes:
        return "Resize along the batch axis is not supported"
    return None


@GRADIENTS.register("Resize", inputs=(0,), check=_check_resize)
def resize(ctx, node, dys, needs):
    x = node.inputs[0]
    xs = ctx.shape(x)
    rank = len(xs)
    scales, sizes = _targets(ctx, node)
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in node.attrs.items() if k != "axes"}
    grad = dys[0]
    for axis, out_size in sizes.items():
        n = xs[axis]
        basis_shape = [1] * rank
        basis_shape[0] = basis_shape[axis] = n
        basis = np.eye(n, dtype=np.float32).reshape(basis_shape)
        if axis in scales:
            factors = np.ones(rank, dtype=np.float32)
            factors[axis] = scales[axis]
            inputs = [basis, None, factors]
        else:
            target = np.asarray(basis_shape, dtype=np.int64)
            target[axis] = out_size
            inputs = [basis, None, None, target]
        columns = ctx.evaluate("Resize", inputs, attrs).reshape(n, -1)  # row i: image of basis vector i
        grad = ctx.axis_adjoint(grad, rank, axis, columns.T, x)
    return [grad]
