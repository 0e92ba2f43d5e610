"""Simple image augmentation for fine-tuning batches: horizontal flip, shifted crop, scale jitter.

Applied to float inputs of rank 4 (NCHW, or NHWC when the last axis is 1, 3 or 4 and the second is
not), one random draw per sample. With distillation the teacher sees the same augmented batch, so
targets always match their inputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from onnxprune.errors import BadInputError

AUGMENTATIONS = ("flip", "crop", "scale")
CROP_SHIFT = 0.125   # crop: shift by up to this share of the height and width (zero padding)
SCALE_RANGE = 0.15   # scale: zoom in or out by up to this share, size kept


def parse_augment(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'flip,crop' (or a sequence) as a checked tuple; None or '' means no augmentation."""
    if not text:
        return ()
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip())
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise BadInputError(f"--augment: unknown augmentation(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(AUGMENTATIONS)}")
    return names


def _spatial_axes(x: np.ndarray) -> tuple[int, int]:
    nhwc = x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
    return (1, 2) if nhwc else (2, 3)


def _zoom(img: np.ndarray, factor: float, axes: tuple[int, int]) -> np.ndarray:
    """`img` (one sample, no batch axis) resampled by `factor` about its centre, nearest neighbour."""
    out = img
    for axis in axes:
        n = img.shape[axis]
        src = np.clip(np.round((np.arange(n) - (n - 1) / 2) / factor + (n - 1) / 2), -1, n).astype(int)
        valid = (src >= 0) & (src < n)
        taken = np.take(out, np.clip(src, 0, n - 1), axis=axis)
        shape = [1] * img.ndim
        shape[axis] = n
        out = taken * valid.reshape(shape)
    return out


def _shift(img: np.ndarray, dy: int, dx: int, axes: tuple[int, int]) -> np.ndarray:
    out = np.zeros_like(img)
    src, dst = [slice(None)] * img.ndim, [slice(None)] * img.ndim
    for axis, d in zip(axes, (dy, dx)):
        n = img.shape[axis]
        src[axis] = slice(max(0, -d), n - max(0, d))
        dst[axis] = slice(max(0, d), n - max(0, -d))
    out[tuple(dst)] = img[tuple(src)]
    return out


def augment_batch(feeds: dict[str, np.ndarray], names: tuple[str, ...], rng: np.random.Generator) -> dict:
    """A copy of `feeds` with every float rank-4 input augmented per sample (others unchanged)."""
    if not names:
        return feeds
    out = dict(feeds)
    for key, x in feeds.items():
        if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
            continue
        axes = _spatial_axes(x)
        y = x.copy()
        h, w = x.shape[axes[0]], x.shape[axes[1]]
        for i in range(len(y)):
            img = y[i]
            inner = (axes[0] - 1, axes[1] - 1)
            if "flip" in names and rng.random() < 0.5:
                img = np.flip(img, axis=inner[1])
            if "scale" in names:
                img = _zoom(img, 1.0 + rng.uniform(-SCALE_RANGE, SCALE_RANGE), inner)
            if "crop" in names:
                dy = int(rng.integers(-int(h * CROP_SHIFT), int(h * CROP_SHIFT) + 1))
                dx = int(rng.integers(-int(w * CROP_SHIFT), int(w * CROP_SHIFT) + 1))
                img = _shift(img, dy, dx, inner)
            y[i] = img
        out[key] = y
    return out
