"""Faster forms of Conv's gradients for the common case (group 1), built from ORT's fastest kernels.

- Input gradient of a stride-1 Conv: a Conv of dY with the kernel flipped and its channel axes
  swapped. ORT's ConvTranspose runs a GEMM into a column buffer and then a scalar col2im loop; the
  flipped Conv runs the same im2col + GEMM kernel as the forward pass.
- Input gradient of a strided 2-D Conv: one stride-1 Conv per output phase (sub-pixel), interleaved.
- Weight gradient: one GEMM per kernel offset with the batch folded into the reduction, over
  channel-first tensors (C, N, H, W). Moving the channel axis first keeps runs of H*W contiguous
  floats, which ORT transposes at memory speed; the batch-last layout of `im2col_weight_grad` moves
  single floats and is the slower form once feature maps are larger than a few pixels. Strided Convs
  cut x into its stride phases once and slice each tap from its phase (stride-1 Slices: ORT's strided
  Slice copies one float at a time). With few positions and many output channels, all taps go into
  one GEMM over channel-major stacked slices, whose result is the filter as it is.

Which form a layer gets is decided by its shapes in `rules/conv.py`.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.autodiff.context import GradContext


def flipped_conv_pads(geo) -> list[int] | None:
    """Pads of the flipped Conv that gives a stride-1 Conv's input gradient; None when they would be
    negative (pads wider than the dilated kernel)."""
    if set(geo.strides) != {1}:
        return None
    begin = [d * (k - 1) - b for k, d, b in zip(geo.kernel, geo.dilations, geo.begin)]
    end = [d * (k - 1) - e for k, d, e in zip(geo.kernel, geo.dilations, geo.end)]
    return begin + end if min(begin + end) >= 0 else None


def flipped_input_grad(ctx: GradContext, dy: str, w: str, geo, pads: list[int]) -> str:
    """dX[n, c, i] = sum over m, k of dY[n, m, i + b - k*d] * W[m, c, k]: a stride-1 Conv of dY with
    W transposed to (C, M, k) and reversed along every spatial axis."""
    n_sp = len(geo.kernel)
    swapped = ctx.emit("Transpose", [w], perm=[1, 0] + list(range(2, n_sp + 2)))
    big = -(1 << 62)
    flipped = ctx.emit("Slice", [swapped, ctx.ints([-1] * n_sp), ctx.ints([big] * n_sp),
                                 ctx.ints(list(range(2, n_sp + 2))), ctx.ints([-1] * n_sp)])
    return ctx.emit("Conv", [dy, flipped], kernel_shape=geo.kernel, dilations=geo.dilations, pads=pads)


def kernel_windows(geo, spatial_out) -> list[tuple[list[int], list[int]]]:
    """(starts, ends) on the padded input of every kernel tap, in the filter's row-major order: the
    input elements that tap multiplies, for every output position (strided by geo.strides)."""
    offsets = [()]
    for k in geo.kernel:
        offsets = [o + (i,) for o in offsets for i in range(k)]
    windows = []
    for offset in offsets:
        starts = [i * d for i, d in zip(offset, geo.dilations)]
        windows.append((starts, [b + s * (o - 1) + 1 for b, s, o in zip(starts, geo.strides, spatial_out)]))
    return windows


def _channel_first_columns(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple,
                           geo) -> tuple[str, list[Callable[[], str]]]:
    """dY as (M, N*O) rows and, per kernel tap, a maker of the shifted, strided slice of padded x as
    (C, N*O). Made when asked, next to the node that reads it: ORT runs nodes in the order they were
    emitted, so a slice emitted early would stay alive until its reader ran."""
    n_sp = len(geo.kernel)
    channels, out_channels = x_shape[1], dy_shape[1]
    spatial_in, spatial_out = list(x_shape[2:]), list(dy_shape[2:])
    swap = [1, 0] + list(range(2, n_sp + 2))
    unpadded = ctx.emit("Transpose", [x], perm=swap)  # (C, N, *spatial)
    xt = unpadded
    if any(geo.begin) or any(geo.end):
        xt = ctx.emit("Pad", [xt, ctx.ints([0, 0] + geo.begin + [0, 0] + geo.end)])
    rows = ctx.emit("Reshape", [ctx.emit("Transpose", [dy], perm=swap), ctx.ints([out_channels, -1])])  # (M, N*O)
    axes, steps = ctx.ints(list(range(2, n_sp + 2))), ctx.ints(geo.strides)
    windows = kernel_windows(geo, spatial_out)
    phased = max(geo.strides) > 1 and len(windows) > int(np.prod(geo.strides))
    phases: dict[tuple[int, ...], str] = {}

    def phase(residues: tuple[int, ...]) -> str:
        """x[..., r::s] per axis, made once, when a tap first reads it."""
        if residues not in phases:
            phases[residues] = ctx.emit("Slice", [xt, ctx.ints(list(residues)), ctx.ints([1 << 62] * n_sp), axes, steps])
        return phases[residues]

    def column(starts: list[int], ends: list[int]) -> str:
        if starts == geo.begin and set(geo.strides) == {1} and spatial_out == spatial_in:
            shifted = unpadded  # the centre of a "same" conv (and a plain 1x1 conv) reads x as it is
        elif phased:  # a stride-1 slice of the phase the tap reads: runs of O floats, not single ones
            first = [a // s for a, s in zip(starts, geo.strides)]
            shifted = ctx.emit("Slice", [phase(tuple(a % s for a, s in zip(starts, geo.strides))), ctx.ints(first),
                                         ctx.ints([f + o for f, o in zip(first, spatial_out)]), axes])
        else:
            shifted = ctx.emit("Slice", [xt, ctx.ints(starts), ctx.ints(ends), axes, steps])
        return ctx.emit("Reshape", [shifted, ctx.ints([channels, -1])])  # (C, N*O)
    return rows, [functools.partial(column, starts, ends) for starts, ends in windows]


def channel_first_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo) -> str:
    """dW[m, c, k] = sum over (n, o) of dY[n, m, o] * x_padded[n, c, o*s + k*d], group 1.

    x and dY are moved to (C, N, *spatial); per kernel offset the shifted, strided slice of x is a
    (C, N*O) matrix and dW[:, :, k] = dY (M, N*O) times its transpose: one GEMM with the whole batch
    in its reduction. 1x1 kernels without padding or stride read x as it is.
    """
    channels, out_channels = x_shape[1], dy_shape[1]
    rows, cols = _channel_first_columns(ctx, x, dy, x_shape, dy_shape, geo)
    parts = [ctx.emit("Gemm", [rows, column()], transB=1) for column in cols]  # (M, C) each
    k = len(parts)
    if k == 1:
        return ctx.emit("Reshape", [parts[0], ctx.ints([out_channels, channels] + geo.kernel)])
    return _taps_last(ctx, ctx.emit("Concat", parts, axis=1), out_channels, channels, k, geo)  # (M, k*C)


STACK_LIMIT = 1 << 19  # floats in one stacked matrix (2 MB): its slices and it are alive together


def stacked_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo) -> str:
    """The same sum as `channel_first_weight_grad` with the shifted slices stacked into (g*C, N*O)
    matrices of g taps and one GEMM per stack. For few input channels (a stem: 3) the per-tap GEMMs
    are (M, 3) outputs over a reduction of N*O, and MLAS runs them far below its speed; (M, g*C)
    outputs run at it. g is capped so a stack stays under STACK_LIMIT floats (ResNet-18's stem as
    one stack of all 49 taps added 56 MB to the training peak, stacks of 3 taps 16 MB)."""
    channels, out_channels = x_shape[1], dy_shape[1]
    rows, cols = _channel_first_columns(ctx, x, dy, x_shape, dy_shape, geo)
    per_tap = channels * dy_shape[0] * int(np.prod(dy_shape[2:]))
    group = max(1, STACK_LIMIT // per_tap)
    parts = []
    for start in range(0, len(cols), group):
        chunk = cols[start:start + group]
        made = [column() for column in chunk]
        stacked = ctx.emit("Concat", made, axis=0) if len(made) > 1 else made[0]  # (g*C, N*O), tap-major
        parts.append(ctx.emit("Gemm", [rows, stacked], transB=1))  # (M, g*C)
    grad = ctx.emit("Concat", parts, axis=1) if len(parts) > 1 else parts[0]  # (M, k*C)
    return _taps_last(ctx, grad, out_channels, channels, len(cols), geo)


def interleaved_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo) -> str:
    """The same sum as `channel_first_weight_grad` as one GEMM over the shifted slices stacked
    channel-major, (C, k, N*O) -> (C*k, N*O): its (M, C*k) result is the filter (M, C, *kernel) as
    it is. The per-tap form concatenates k (M, C) results and transposes taps last, two passes over
    a filter-sized tensor with runs of one float (ResNet-18's 4x4 stage: 512x512x9 filters, against
    columns of 256 per row); here the copies are the stack's, runs of N*O floats."""
    channels, out_channels = x_shape[1], dy_shape[1]
    rows, cols = _channel_first_columns(ctx, x, dy, x_shape, dy_shape, geo)
    made = [ctx.emit("Unsqueeze", [column(), ctx.ints([1])]) for column in cols]  # (C, 1, N*O) each
    stacked = ctx.emit("Concat", made, axis=1) if len(made) > 1 else made[0]  # (C, k, N*O)
    flat = ctx.emit("Reshape", [stacked, ctx.ints([channels * len(cols), -1])])
    grad = ctx.emit("Gemm", [rows, flat], transB=1)  # (M, C*k)
    return ctx.emit("Reshape", [grad, ctx.ints([out_channels, channels] + geo.kernel)])


def _taps_last(ctx: GradContext, grad: str, out_channels: int, channels: int, k: int, geo) -> str:
    """(M, k*C), tap-major, as the filter (M, C, *kernel)."""
    split = ctx.emit("Reshape", [grad, ctx.ints([out_channels, k, channels])])
    grad = ctx.emit("Transpose", [split], perm=[0, 2, 1])
    return ctx.emit("Reshape", [grad, ctx.ints([out_channels, channels] + geo.kernel)])


def subpixel_applies(geo, group: int) -> bool:
    return group == 1 and len(geo.kernel) == 2 and set(geo.dilations) == {1} and max(geo.strides) > 1


def _phase_taps(k: int, s: int, b: int, size: int, out: int, r: int):
    """Axis plan of phase r (input rows s*a + r): kernel taps in the order the phase Conv reads them,
    rows of dY to drop first, the Conv's pads, and the phase's row count; None if no tap reaches it."""
    rows = len(range(r, size, s))
    taps = sorted((t for t in range(k) if (r + b - t) % s == 0), key=lambda t: (r + b - t) // s)
    if not taps or not rows:
        return None
    first = (r + b - taps[0]) // s  # dY row read by tap 0 for phase row 0
    drop = max(first, 0)
    begin = max(-first, 0)
    end = rows - (out - drop) - begin + len(taps) - 1
    return taps, drop, begin, max(end, 0), rows


def subpixel_input_grad(ctx: GradContext, dy: str, w: str, x_shape: tuple, dy_shape: tuple, geo) -> str:
    """The input gradient of a strided 2-D Conv as s_h*s_w stride-1 Convs, one per output phase.

    Input row s*a + r only receives the taps t with (r + pad - t) divisible by s, each from dY row
    a + (r + pad - t)/s: a stride-1 Conv of dY with those taps of the kernel (flipped, channel axes
    swapped). The phases are then interleaved. ConvTranspose computes the same with one GEMM per
    image into a column buffer; at ResNet-18's 4x4 stage that GEMM is 16 columns wide and 5x slower.
    """
    channels = x_shape[1]
    size, out = list(x_shape[2:]), list(dy_shape[2:])
    steps = geo.strides
    full = [-(-n // s) for n, s in zip(size, steps)]  # rows of phase 0, the longest
    phases = []
    for rh in range(steps[0]):
        for rw in range(steps[1]):
            plans = [_phase_taps(k, s, b, n, o, r) for k, s, b, n, o, r in
                     zip(geo.kernel, steps, geo.begin, size, out, (rh, rw))]
            phases.append(_phase(ctx, dy, w, plans, channels, full))
    stacked = ctx.emit("Concat", phases, axis=2)  # (N, C, sh*sw, A, B)
    if steps[0] == steps[1]:  # the same interleave as DepthToSpace (CRD), 1.6x faster in ORT than its Transpose
        dx = ctx.emit("DepthToSpace", [ctx.emit("Reshape", [stacked, ctx.ints([0, -1] + full)])],
                      blocksize=steps[0], mode="CRD")
    else:
        grid = ctx.emit("Reshape", [stacked, ctx.ints([0, 0] + list(steps) + full)])
        woven = ctx.emit("Transpose", [grid], perm=[0, 1, 4, 2, 5, 3])  # (N, C, A, sh, B, sw)
        dx = ctx.emit("Reshape", [woven, ctx.ints([0, 0, full[0] * steps[0], full[1] * steps[1]])])
    if [f * s for f, s in zip(full, steps)] != size:
        dx = ctx.emit("Slice", [dx, ctx.ints([0, 0]), ctx.ints(size), ctx.ints([2, 3])])
    return dx


def _phase(ctx: GradContext, dy: str, w: str, plans, channels: int, full: list[int]) -> str:
    """One phase as (N, C, 1, A, B): its stride-1 Conv padded to the longest phase, or zeros."""
    if any(p is None for p in plans):
        batch = ctx.emit("Shape", [dy], start=0, end=1)
        shape = ctx.emit("Concat", [batch, ctx.ints([channels, 1] + full)], axis=0)
        return ctx.emit("ConstantOfShape", [shape], value=_zero(ctx, dy))
    source = dy
    if any(p[1] for p in plans):
        source = ctx.emit("Slice", [dy, ctx.ints([p[1] for p in plans]), ctx.ints([1 << 62] * 2), ctx.ints([2, 3])])
    kernel = w
    for axis, p in zip((2, 3), plans):
        kernel = ctx.emit("Gather", [kernel, ctx.ints(p[0])], axis=axis)
    kernel = ctx.emit("Transpose", [kernel], perm=[1, 0, 2, 3])
    phase = ctx.emit("Conv", [source, kernel], kernel_shape=[len(p[0]) for p in plans],
                     pads=[p[2] for p in plans] + [p[3] for p in plans])
    rows = [p[4] for p in plans]
    # a negative end pad would have cut rows: the Conv ran with 0 and the extra rows go here
    phase = ctx.emit("Slice", [phase, ctx.ints([0, 0]), ctx.ints(rows), ctx.ints([2, 3])])
    if rows != full:
        phase = ctx.emit("Pad", [phase, ctx.ints([0, 0, 0, 0, 0, 0] + [f - n for f, n in zip(full, rows)])])
    return ctx.emit("Unsqueeze", [phase, ctx.ints([2])])


def _zero(ctx: GradContext, like: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(1, dtype=ctx.np_dtype(like)))
