"""Conv and ConvTranspose, each written with the other.

Conv's input gradient is a ConvTranspose of dY with the same weights; rows the forward stride
skipped at the end come back through `output_padding`. Its weight gradient is a sum over kernel
offsets of GEMMs between shifted x and dY (or, when the shifted copies would be large, a Conv of x
with dY as the kernel over batch/channel-swapped tensors, strides and dilations trading places).
ConvTranspose is Conv's adjoint, so its gradients are the same pieces the other way round.
For group-1 Convs, `rules/conv_gemm.py` has faster forms (flipped and sub-pixel Convs for the
input gradient, channel-first GEMMs for the weight gradient); `input_grad` and `weight_grad` pick.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable
from onnxprune.autodiff.rules.conv_gemm import (channel_first_weight_grad, flipped_conv_pads, flipped_input_grad,
                                                interleaved_weight_grad, kernel_windows, stacked_weight_grad,
                                                subpixel_applies, subpixel_input_grad)

GRADIENTS = RuleTable()


@dataclass
class Geometry:
    """Per spatial axis: kernel size, stride, dilation and the pads actually applied."""

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begin: list[int]
    end: list[int]


def geometry(node, kernel: list[int], in_size: list[int], out_size: list[int]) -> Geometry:
    """Resolve auto_pad against the probe shapes (Conv, pools)."""
    n = len(kernel)
    strides = list(attr(node, "strides", [1] * n))
    dilations = list(attr(node, "dilations", [1] * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for k, s, d, i, o in zip(kernel, strides, dilations, in_size, out_size):
            total = max(0, (o - 1) * s + d * (k - 1) + 1 - i)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto_pad == "VALID":
        begin, end = [0] * n, [0] * n
    else:
        pads = list(attr(node, "pads", [0] * 2 * n))
        begin, end = pads[:n], pads[n:]
    return Geometry(list(kernel), strides, dilations, begin, end)


def conv_input_grad(ctx: GradContext, dy: str, w: str, in_size: list[int], out_size: list[int], geo: Geometry,
                    group: int) -> str:
    """The adjoint of a Conv-like window op: ConvTranspose(dy, w) cropped or padded to `in_size`."""
    crop_end, out_pad, extra = [], [], []
    for k, s, d, b, e, i, o in zip(geo.kernel, geo.strides, geo.dilations, geo.begin, geo.end, in_size, out_size):
        natural = s * (o - 1) + d * (k - 1) + 1 - b - e
        missing = i - natural  # rows no window reached (stride remainder) or windows past the end
        if missing < 0:
            crop_end.append(e - missing), out_pad.append(0), extra.append(0)
        elif missing < s:
            crop_end.append(e), out_pad.append(missing), extra.append(0)
        else:
            crop_end.append(e), out_pad.append(0), extra.append(missing)
    dx = ctx.emit("ConvTranspose", [dy, w], kernel_shape=geo.kernel, strides=geo.strides, dilations=geo.dilations,
                  pads=geo.begin + crop_end, output_padding=out_pad if any(out_pad) else None, group=group)
    if any(extra):
        n = len(in_size)
        dx = ctx.emit("Pad", [dx, ctx.ints([0] * (n + 2) + [0, 0] + extra)])
    return dx


def conv_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo: Geometry,
                     group: int) -> str:
    """dW[m, c, k] = sum over batch and output positions of dy[n, m, o] * x_padded[n, c, o*s + k*d].

    That is a Conv whose batch is x's channels and whose kernel is dy: strides <- dilations,
    dilations <- strides. With groups, x's channels are regrouped so group g's slice of channels
    meets group g's slice of dy (channel index g*N + n of the swapped input).
    """
    n_sp = len(geo.kernel)
    channels = x_shape[1]
    per_group = channels // group
    spatial_in, spatial_out = list(x_shape[2:]), list(dy_shape[2:])
    swap = [1, 0] + list(range(2, n_sp + 2))
    if group == 1:
        inp = ctx.emit("Transpose", [x], perm=swap)
    else:
        split = ctx.emit("Reshape", [x, ctx.ints([0, group, per_group] + spatial_in)])
        moved = ctx.emit("Transpose", [split], perm=[2, 1, 0] + list(range(3, n_sp + 3)))
        inp = ctx.emit("Reshape", [moved, ctx.ints([per_group, -1] + spatial_in)])
    kernel = ctx.emit("Transpose", [dy], perm=swap)
    end, size = [], []
    for k, s, d, b, e, i, o in zip(geo.kernel, geo.strides, geo.dilations, geo.begin, geo.end, spatial_in, spatial_out):
        rem = i + b + e - d * (k - 1) - 1 - s * (o - 1)  # input rows after the last window
        end.append(max(e - rem, 0))
        size.append((i + b + end[-1] - s * (o - 1) - 1) // d + 1)
    grad = ctx.emit("Conv", [inp, kernel], strides=geo.dilations, dilations=geo.strides, pads=geo.begin + end,
                    group=group)
    if size != geo.kernel:  # the remainder rows made windows the forward never used: crop them
        axes = list(range(2, n_sp + 2))
        grad = ctx.emit("Slice", [grad, ctx.ints([0] * n_sp), ctx.ints(geo.kernel), ctx.ints(axes)])
    return ctx.emit("Transpose", [grad], perm=swap)


IM2COL_LIMIT = 1 << 20  # elements of one sample's column matrix (C * k * out positions)


def im2col_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo: Geometry,
                       group: int) -> str:
    """dW as one GEMM per kernel offset: shifted x as (C, O*N) times dY as (O*N, M).

    ORT runs the swapped-tensor Conv form above as many thin GEMMs (an output of only k x k
    positions). Wide GEMMs over shifted copies of x are faster, and with the batch axis last the
    shifted copies are runs of N contiguous floats: together 1.3-2x faster than the Conv form and
    than a batch-first layout (measured on the digits CNN's convs).
    """
    n_sp = len(geo.kernel)
    channels, out_channels = x_shape[1], dy_shape[1]
    spatial_in, spatial_out = list(x_shape[2:]), list(dy_shape[2:])
    unpadded = ctx.emit("Transpose", [x], perm=[1] + list(range(2, n_sp + 2)) + [0])  # (C, *spatial, N)
    xt = unpadded
    if any(geo.begin) or any(geo.end):
        xt = ctx.emit("Pad", [xt, ctx.ints([0] + geo.begin + [0, 0] + geo.end + [0])])
    rows = ctx.emit("Reshape", [ctx.emit("Transpose", [dy], perm=list(range(2, n_sp + 2)) + [0, 1]),
                                ctx.ints([-1, out_channels])])  # (O*N, M)
    if group > 1:
        rows = ctx.emit("Transpose", [ctx.emit("Reshape", [rows, ctx.ints([-1, group, out_channels // group])])],
                        perm=[1, 0, 2])  # (g, O*N, M/g)
    windows = kernel_windows(geo, spatial_out)
    axes, steps = ctx.ints(list(range(1, n_sp + 1))), ctx.ints(geo.strides)
    parts = []
    for starts, ends in windows:
        if starts == geo.begin and set(geo.strides) == {1} and spatial_out == spatial_in:
            shifted = unpadded  # the centre of a "same" conv reads x as it is
        else:
            shifted = ctx.emit("Slice", [xt, ctx.ints(starts), ctx.ints(ends), axes, steps])
        if group == 1:
            parts.append(ctx.emit("Gemm", [ctx.emit("Reshape", [shifted, ctx.ints([channels, -1])]), rows]))
        else:
            grouped = ctx.emit("Reshape", [shifted, ctx.ints([group, channels // group, -1])])
            parts.append(ctx.emit("MatMul", [grouped, rows]))  # (g, C/g, M/g)
    k = len(windows)
    stacked = ctx.emit("Concat", parts, axis=0) if k > 1 else parts[0]
    if group == 1:  # (k*C, M) -> (M, C, k)
        split = ctx.emit("Reshape", [stacked, ctx.ints([k, channels, out_channels])])
        grad = ctx.emit("Transpose", [split], perm=[2, 1, 0])
    else:  # (k*g, C/g, M/g) -> (g, M/g, C/g, k)
        split = ctx.emit("Reshape", [stacked, ctx.ints([k, group, channels // group, out_channels // group])])
        grad = ctx.emit("Transpose", [split], perm=[1, 3, 2, 0])
    return ctx.emit("Reshape", [grad, ctx.ints([out_channels, channels // group] + geo.kernel)])


# Channel-first GEMMs beat batch-last columns once output rows are long or the layer is wide
# (ResNet-18 at 112x112: every layer; the digits CNN, 32-64 channels on 8x8 and 4x4: none of them)
CHANNEL_FIRST_WIDTH = 14
CHANNEL_FIRST_CHANNELS = 128
# Fewer input channels than this: one GEMM over the stacked taps (ResNet-18's 3-channel 7x7 stem: 49
# GEMMs with 3-wide outputs took 7% of its step, 2.2x slower than one (64, 147) GEMM)
STACKED_CHANNELS = 16
# Few output positions per filter row (ResNet-18's 4x4 stage: 16 per image against 512 output
# channels): one GEMM over channel-major stacked slices, whose result is the filter as it is
INTERLEAVED_BATCH = 32  # the batch assumed (shapes are probed at batch 2): stack <= filter below it
WEIGHT_GRAD_FORM = "auto"  # or "columns", "conv", "channel_first", "stacked", "interleaved": one form for every layer
SUBPIXEL = True  # strided group-1 2-D Convs: one stride-1 Conv per output phase instead of ConvTranspose
# ConvTranspose's per-image GEMM is as wide as dY's positions: from 14x14 on it beats the phases and
# their interleave (ResNet-18's 3x3/2 at 28x28: 0.90-0.94x the time), as it does for kernels no larger
# than the stride (1x1/2 projections: one tap per phase, three phases of zeros; 0.76-0.87x)
SUBPIXEL_MAX_POSITIONS = 196
INPUT_GRAD_FORM = "flipped"  # stride-1 group-1 Convs: a flipped Conv; "transpose": ConvTranspose always


def weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo: Geometry, group: int) -> str:
    """The weight gradient of a Conv-like op: explicit batch-last columns while they stay small,
    channel-first GEMMs (one shifted copy of x at a time; all taps in one GEMM for few input
    channels) for long rows, wide or large group-1 layers, and a Conv over swapped tensors for large
    grouped ones."""
    per_sample = x_shape[1] * int(np.prod(geo.kernel)) * int(np.prod(dy_shape[2:]))
    form = WEIGHT_GRAD_FORM
    if form == "auto":
        form = "columns" if per_sample <= IM2COL_LIMIT else "conv"
        wide = dy_shape[-1] >= CHANNEL_FIRST_WIDTH or min(x_shape[1], dy_shape[1]) >= CHANNEL_FIRST_CHANNELS
        if group == 1 and (form == "conv" or wide):
            form = "stacked" if x_shape[1] < STACKED_CHANNELS else "channel_first"
        if form == "channel_first" and np.prod(geo.kernel) > 1 and \
                INTERLEAVED_BATCH * int(np.prod(dy_shape[2:])) <= dy_shape[1]:
            form = "interleaved"
    if form == "interleaved" and group == 1:
        return interleaved_weight_grad(ctx, x, dy, x_shape, dy_shape, geo)
    if form == "channel_first" and group == 1:
        return channel_first_weight_grad(ctx, x, dy, x_shape, dy_shape, geo)
    if form == "stacked" and group == 1:
        return stacked_weight_grad(ctx, x, dy, x_shape, dy_shape, geo)
    fn = conv_weight_grad if form == "conv" else im2col_weight_grad
    return fn(ctx, x, dy, x_shape, dy_shape, geo, group)


def subpixel_wins(geo: Geometry, dy_shape: tuple) -> bool:
    """Sub-pixel phases beat ConvTranspose: dY narrow per image, and a kernel wider than the stride."""
    narrow = int(np.prod(dy_shape[2:])) < SUBPIXEL_MAX_POSITIONS
    return narrow and any(k > s for k, s in zip(geo.kernel, geo.strides))


def input_grad(ctx: GradContext, dy: str, w: str, x_shape: tuple, dy_shape: tuple, geo: Geometry, group: int) -> str:
    """Conv's input gradient: a flipped stride-1 Conv where that applies, else ConvTranspose."""
    pads = flipped_conv_pads(geo) if group == 1 and INPUT_GRAD_FORM == "flipped" else None
    if pads is not None:
        return flipped_input_grad(ctx, dy, w, geo, pads)
    if INPUT_GRAD_FORM == "flipped" and SUBPIXEL and subpixel_applies(geo, group) and subpixel_wins(geo, dy_shape):
        return subpixel_input_grad(ctx, dy, w, x_shape, dy_shape, geo)
    return conv_input_grad(ctx, dy, w, list(x_shape[2:]), list(dy_shape[2:]), geo, group)


def bias_grad(ctx: GradContext, dy: str, rank: int) -> str:
    return ctx.emit("ReduceSum", [dy, ctx.ints([0] + list(range(2, rank)))], keepdims=0)


@GRADIENTS.register("Conv", layer=True)
def conv(ctx, node, dys, needs):
    x, w = node.inputs[:2]
    y, dy = node.outputs[0], dys[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(y)
    group = int(attr(node, "group", 1))
    geo = geometry(node, list(ws[2:]), list(xs[2:]), list(ys[2:]))
    dx = input_grad(ctx, dy, w, xs, ys, geo, group) if needs[0] else None
    dw = weight_grad(ctx, x, dy, xs, ys, geo, group) if needs[1] else None
    db = bias_grad(ctx, dy, len(ys)) if len(needs) > 2 and needs[2] else None
    return [dx, dw, db][:len(node.inputs)]


def _transpose_geometry(ctx: GradContext, node, xs, ws, ys) -> tuple[Geometry, list[int]]:
    """ConvTranspose pads as applied: explicit, or derived from output_shape / auto_pad."""
    n = len(ws) - 2
    kernel = list(ws[2:])
    geo = geometry(node, kernel, list(ys[2:]), list(xs[2:]))  # strides, dilations, explicit pads
    out_pad = list(attr(node, "output_padding", [0] * n))
    auto_pad = attr(node, "auto_pad", "NOTSET")
    if "output_shape" in node.attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for k, s, d, op, i, o in zip(kernel, geo.strides, geo.dilations, out_pad, xs[2:], ys[2:]):
            total = s * (i - 1) + op + (k - 1) * d + 1 - o
            small = total // 2
            if auto_pad == "SAME_UPPER":
                begin.append(small), end.append(total - small)
            else:
                begin.append(total - small), end.append(small)
        geo.begin, geo.end = begin, end
    return geo, out_pad


def _check_transpose(ctx, node):
    xs, ws, ys = ctx.shape(node.inputs[0]), ctx.shape(node.inputs[1]), ctx.shape(node.outputs[0])
    geo, _ = _transpose_geometry(ctx, node, xs, ws, ys)
    if min(geo.begin + geo.end) < 0:
        return "ConvTranspose with an output_shape larger than its windows cover is not supported"
    return None


@GRADIENTS.register("ConvTranspose", layer=True, check=_check_transpose)
def conv_transpose(ctx, node, dys, needs):
    x, w = node.inputs[:2]
    y, dy = node.outputs[0], dys[0]
    xs, ws, ys = ctx.shape(x), ctx.shape(w), ctx.shape(y)
    group = int(attr(node, "group", 1))
    geo, _ = _transpose_geometry(ctx, node, xs, ws, ys)
    dx = dw = db = None
    if needs[0]:  # the adjoint of ConvTranspose is the Conv it transposes
        dx = ctx.emit("Conv", [dy, w], kernel_shape=geo.kernel, strides=geo.strides, dilations=geo.dilations,
                      pads=geo.begin + geo.end, group=group)
        sizes = [(o + b + e - d * (k - 1) - 1) // s + 1 for k, s, d, b, e, o in
                 zip(geo.kernel, geo.strides, geo.dilations, geo.begin, geo.end, ys[2:])]
        if sizes != list(xs[2:]):  # output_padding of a stride or more adds windows x never fed
            axes = list(range(2, len(xs)))
            dx = ctx.emit("Slice", [dx, ctx.ints([0] * len(axes)), ctx.ints(xs[2:]), ctx.ints(axes)])
    if needs[1]:  # same sum as Conv's weight gradient with the roles of x and dy exchanged
        dw = weight_grad(ctx, dy, x, ys, xs, geo, group)
    if len(needs) > 2 and needs[2]:
        db = bias_grad(ctx, dy, len(ys))
    return [dx, dw, db][:len(node.inputs)]
