"""Faster forms of Conv's gradients for the common case (group 1), built from ORT's fastest kernels.

- Input gradient of a stride-1 Conv: a Conv of dY with the kernel flipped and its channel axes
  swapped. ORT's ConvTranspose runs a GEMM into a column buffer and then a scalar col2im loop; the
  flipped Conv runs the same im2col + GEMM kernel as the forward pass.
- Weight gradient: one GEMM per kernel offset with the batch folded into the reduction, over
  channel-first tensors (C, N, H, W). Moving the channel axis first keeps runs of H*W contiguous
  floats, which ORT transposes at memory speed; the batch-last layout of `im2col_weight_grad` moves
  single floats and is the slower form once feature maps are larger than a few pixels.

Which form a layer gets is decided by its shapes in `rules/conv.py`.
"""

from __future__ import annotations

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


def channel_first_weight_grad(ctx: GradContext, x: str, dy: str, x_shape: tuple, dy_shape: tuple, geo) -> str:
    """dW[m, c, k] = sum over (n, o) of dY[n, m, o] * x_padded[n, c, o*s + k*d], group 1.

    x and dY are moved to (C, N, *spatial); per kernel offset the shifted, strided slice of x is a
    (C, N*O) matrix and dW[:, :, k] = dY (M, N*O) times its transpose: one GEMM with the whole batch
    in its reduction. 1x1 kernels without padding or stride read x as it is.
    """
    n_sp = len(geo.kernel)
    channels, out_channels = x_shape[1], dy_shape[1]
    spatial_in, spatial_out = list(x_shape[2:]), list(dy_shape[2:])
    swap = [1, 0] + list(range(2, n_sp + 2))
    unpadded = ctx.emit("Transpose", [x], perm=swap)  # (C, N, *spatial)
    xt = unpadded
    if any(geo.begin) or any(geo.end):
        xt = ctx.emit("Pad", [xt, ctx.ints([0, 0] + geo.begin + [0, 0] + geo.end)])
    rows = ctx.emit("Reshape", [ctx.emit("Transpose", [dy], perm=swap), ctx.ints([out_channels, -1])])  # (M, N*O)
    offsets = [()]
    for k in geo.kernel:
        offsets = [o + (i,) for o in offsets for i in range(k)]
    axes, steps = ctx.ints(list(range(2, n_sp + 2))), ctx.ints(geo.strides)
    parts = []
    for offset in offsets:
        starts = [i * d for i, d in zip(offset, geo.dilations)]
        ends = [b + s * (o - 1) + 1 for b, s, o in zip(starts, geo.strides, spatial_out)]
        if starts == geo.begin and set(geo.strides) == {1} and spatial_out == spatial_in:
            shifted = unpadded  # the centre of a "same" conv (and a plain 1x1 conv) reads x as it is
        else:
            shifted = ctx.emit("Slice", [xt, ctx.ints(starts), ctx.ints(ends), axes, steps])
        cols = ctx.emit("Reshape", [shifted, ctx.ints([channels, -1])])  # (C, N*O)
        parts.append(ctx.emit("Gemm", [rows, cols], transB=1))  # (M, C)
    k = len(offsets)
    if k == 1:
        return ctx.emit("Reshape", [parts[0], ctx.ints([out_channels, channels] + geo.kernel)])
    stacked = ctx.emit("Concat", parts, axis=1)  # (M, k*C), offset-major
    split = ctx.emit("Reshape", [stacked, ctx.ints([out_channels, k, channels])])
    grad = ctx.emit("Transpose", [split], perm=[0, 2, 1])
    return ctx.emit("Reshape", [grad, ctx.ints([out_channels, channels] + geo.kernel)])

