"""The quantization scheme of one QDQ weight, and the arithmetic of DequantizeLinear and its inverse.

A lifted weight (load/qdq_lift.py) remembers its scheme here; lowering it (apply/qdq_lower.py)
re-quantizes the pruned and re-solved values with the same scheme. Dequantization is written as
ONNX Runtime computes it (int32 difference, then one float32 multiply), so lifting is exact and
re-quantizing an untouched weight gives back its integers bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx


@dataclass
class QuantParams:
    """How one float weight was stored: `int_name` (integers of `dtype`) times `scale` minus
    `zero_point`, per channel on `axis` (None: one scale for the whole tensor)."""

    name: str  # the float weight: the DequantizeLinear's output
    int_name: str
    scale_name: str
    zero_name: str | None  # None: the node had no zero point input
    dtype: np.dtype
    axis: int | None
    scale: np.ndarray  # [C] per channel, or a scalar
    zero_point: np.ndarray  # same shape as scale, of `dtype`
    node_name: str = ""
    attributes: list[onnx.AttributeProto] = field(default_factory=list)
    domain: str = ""
    full_range: bool = False  # the integers reach the type's minimum (-128 for int8): allowed again
    reduced: bool = False  # 8-bit integers kept in 7 bits (ORT's reduce_range: int8 in [-64, 64]): kept so


    def channels(self, kept: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The scale and zero point of the kept channels (all of them for a per-tensor scheme)."""
        if self.axis is None or kept is None:
            return self.scale, self.zero_point
        return self.scale[kept], self.zero_point[kept]


def int_range(dtype: np.dtype, zero_point: np.ndarray, full_range: bool = False,
              reduced: bool = False) -> tuple[int, int]:
    """The integers a weight may take. Signed with zero points all 0 is ORT's symmetric scheme:
    [-127, 127] for int8, so -128 is never introduced where the quantizer avoided it (unless the
    original integers used it: `full_range`); `reduced` 8-bit weights stay in 7 bits as ORT's
    reduce_range put them ([-64, 64] for int8, [0, 127] for uint8: AVX2's u8s8 kernels saturate beyond)."""
    info = np.iinfo(dtype)
    if reduced and info.bits == 8:
        return (-64, 64) if info.min < 0 else (0, 127)
    if info.min < 0 and not np.any(zero_point) and not full_range:
        return -info.max, info.max
    return int(info.min), int(info.max)


def is_reduced(q: np.ndarray, zero_point: np.ndarray) -> bool:
    """8-bit integers that never leave 7 bits: ORT's reduce_range ([-64, 64] int8 with zero point 0,
    [0, 127] uint8); a full-range quantizer maps each channel's largest value to 127 or 255."""
    info = np.iinfo(q.dtype)
    if info.bits != 8 or q.size == 0:
        return False
    if info.min < 0:
        return not np.any(zero_point) and int(np.abs(q.astype(np.int16)).max()) <= 64
    return int(q.max()) <= 127


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None) -> np.ndarray:
    """(q - zero_point) * scale in float32, as DequantizeLinear computes it."""
    s, z = _along(scale, axis, q.ndim), _along(zero_point, axis, q.ndim)
    diff = q.astype(np.int64) - z.astype(np.int64)
    return (diff.astype(scale.dtype) * s).astype(scale.dtype)


def quantize(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None,
             dtype: np.dtype, full_range: bool = False, reduced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`w` as integers of `dtype` with the given scheme, and the scale used: each channel's scale is
    kept where its values fit the integer range and grown just enough where they do not
    (scale' = max(scale, |w| / qmax)), so re-solved weights are never clipped."""
    lo, hi = int_range(dtype, zero_point, full_range, reduced)
    scale = _grown(w, scale, zero_point, axis, lo, hi)
    s, z = _along(scale, axis, w.ndim), _along(zero_point, axis, w.ndim)
    q = np.rint(w.astype(np.float64) / s.astype(np.float64)) + z.astype(np.float64)
    return np.clip(q, lo, hi).astype(dtype), scale


def _grown(w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None, lo: int, hi: int) -> np.ndarray:
    """Per channel: the scale itself if rounding keeps every value in [lo, hi], else the smallest that does."""
    per = w.astype(np.float64)
    per = np.moveaxis(per, axis, 0).reshape(per.shape[axis], -1) if axis is not None else per.reshape(1, -1)
    s = np.asarray(scale, np.float64).reshape(-1)
    z = np.asarray(zero_point, np.float64).reshape(-1)
    if per.shape[1] == 0:
        return scale
    top, bottom = per.max(axis=1), per.min(axis=1)
    q_top, q_bottom = np.rint(top / s) + z, np.rint(bottom / s) + z
    over = (q_top > hi) | (q_bottom < lo)
    if not over.any():
        return scale  # the common case, and the round trip: the original scale, untouched
    need = np.maximum(np.maximum(top, 0) / np.maximum(hi - z, 1), np.minimum(bottom, 0) / np.minimum(lo - z, -1))
    grown = np.where(over, np.maximum(s, need), s).astype(scale.dtype)
    return grown.reshape(np.shape(scale))


def _along(values: np.ndarray, axis: int | None, rank: int) -> np.ndarray:
    """Per-channel values shaped to broadcast along `axis` of a rank-`rank` tensor."""
    values = np.asarray(values)
    if axis is None or values.ndim == 0:
        return values.reshape(())
    shape = [1] * rank
    shape[axis] = values.shape[0]
    return values.reshape(shape)
