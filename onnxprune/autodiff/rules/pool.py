"""Pooling: MaxPool routes dY to the argmax (Indices + ScatterElements), average pools spread it."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ..context import attr
from ..registry import register
from .conv import conv_input_grad, geometry


def _check_maxpool(ctx, node):
    if int(attr(node, "storage_order", 0)):
        return "MaxPool with storage_order=1 (column-major indices) is not supported"
    return None


@register("MaxPool", inputs=(0,), check=_check_maxpool)
def max_pool(ctx, node, dys, needs):
    # Indices are flat positions in the whole input tensor, batch and channel included (ORT measured)
    x, dy = node.inputs[0], dys[0]
    indices = ctx.forward_output(node, 1)
    flat = ctx.ints([-1])
    size = ctx.emit("Reshape", [ctx.emit("Size", [x]), flat])
    zero = np.zeros(1, dtype=ctx.np_dtype(x))
    zeros = ctx.emit("ConstantOfShape", [size], value=numpy_helper.from_array(zero))
    scattered = ctx.emit("ScatterElements", [zeros, ctx.emit("Reshape", [indices, flat]), ctx.emit("Reshape", [dy, flat])],
                         axis=0, reduction="add")
    return [ctx.emit("Reshape", [scattered, ctx.shape_of(x)])]


def _valid_counts(geo, in_size, out_size) -> np.ndarray:
    """How many window elements fall inside the (unpadded) input, per output position."""
    per_axis = []
    for k, s, d, b, i, o in zip(geo.kernel, geo.strides, geo.dilations, geo.begin, in_size, out_size):
        starts = np.arange(o)[:, None] * s - b + np.arange(k)[None, :] * d
        per_axis.append(((starts >= 0) & (starts < i)).sum(axis=1))
    counts = per_axis[0]
    for c in per_axis[1:]:
        counts = np.multiply.outer(counts, c)
    return counts


@register("AveragePool", inputs=(0,))
def average_pool(ctx, node, dys, needs):
    # dX = ConvTranspose(dY / divisor, ones): each output spreads its gradient over its window.
    # The divisor ORT uses (pads counted or not, ceil_mode windows) is read off AveragePool(ones).
    x, y, dy = node.inputs[0], node.outputs[0], dys[0]
    xs, ys = ctx.shape(x), ctx.shape(y)
    kernel = list(attr(node, "kernel_shape"))
    geo = geometry(node, kernel, list(xs[2:]), list(ys[2:]))
    dtype = ctx.np_dtype(x)
    ones = np.ones((1, 1) + tuple(xs[2:]), dtype=dtype)
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in node.attrs.items()}
    mean_of_ones = ctx.evaluate("AveragePool", [ones], attrs)[0, 0]
    weights = (mean_of_ones / _valid_counts(geo, xs[2:], ys[2:])).astype(dtype)
    channels = xs[1]
    if np.allclose(weights, weights.flat[0]):  # the usual case: fold 1/k into the kernel
        kernel_value, scaled = float(weights.flat[0]), dy
    else:
        kernel_value, scaled = 1.0, ctx.emit("Mul", [dy, ctx.const(weights, "pool_weights")])
    w = ctx.const(np.full((channels, 1) + tuple(kernel), kernel_value, dtype=dtype), "pool_kernel")
    return [conv_input_grad(ctx, scaled, w, list(xs[2:]), list(ys[2:]), geo, channels)]


@register("GlobalAveragePool", inputs=(0,))
def global_average_pool(ctx, node, dys, needs):
    x = node.inputs[0]
    area = int(np.prod(ctx.shape(x)[2:]))
    return [ctx.emit("Expand", [ctx.emit("Div", [dys[0], ctx.scalar(float(area), x)]), ctx.shape_of(x)])]


@register("GlobalMaxPool", inputs=(0,))
def global_max_pool(ctx, node, dys, needs):
    x, y = node.inputs[0], node.outputs[0]
    return [ctx.emit("Where", [ctx.emit("Equal", [x, y]), dys[0], ctx.scalar(0.0, x)])]
