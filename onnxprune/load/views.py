"""Calibration views: more label-free rows from the same N calibration samples.

Sequential reconstruction re-solves every consumer so that it reproduces the dense model's output; a layer
after a global pooling (squeeze-excitation convs, classifier heads) sees one row per sample, so 32 samples
give 32 rows for up to 96 features and the solve falls back to ridge. Views add rows without labels: the
dense model supplies the target of every view. View 0 of a sample is the sample itself; each further view
applies, per sample and with its own random draw, the geometric kinds asked (shifted crop, scale jitter,
flip: float inputs of rank 4, load/augment.py) and `mix`, a convex blend with another sample (any float
input). Float inputs holding only 0 and 1 (one-hot, masks) stay as they are. Integer and boolean inputs
(bytes, token ids, their masks) cannot be blended: `splice` gives them a contiguous span of the last axis
from the same partner, the same span in every input of a sample, so ids and masks stay paired.

Views are made when a batch is read (a `Rows`, load/rows.py), so a pass over K views of N samples holds one
batch, never K copies of the data. Each view's draw depends only on (seed, sample, view), so a second pass
reads exactly the rows of the first. Rows are ordered view by view: the first N rows are the samples
themselves, so `take(n)` with n <= N gives real samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from onnxprune.errors import BadInputError
from onnxprune.load.augment import augment_batch
from onnxprune.load.data import Dataset
from onnxprune.load.rows import Rows

VIEW_KINDS = ("crop", "scale", "flip", "mix", "splice")
# measured at half the MACs with 4 views (docs/benchmarks.md, "Calibration views"): blends alone kept or
# raised every model; adding shifted crops and zoom cost orinet a page and captcha_crnn two captchas.
# Flips change what text and orientation models read.
DEFAULT_KINDS = ("mix",)
MIX_WEIGHT = (0.5, 0.9)  # mix: the sample's own weight is drawn from this range, the partner's is the rest
SPLICE_SHARE = (0.1, 0.5)  # splice: the share of the last axis taken from the partner
SPLICE_MIN = 8  # a last axis shorter than this (a length, a flag) is not a sequence: never spliced


def parse_kinds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'crop,mix' (or a sequence) as a checked tuple; None or '' means DEFAULT_KINDS."""
    if not text:
        return DEFAULT_KINDS
    names = tuple(n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip())
    unknown = [n for n in names if n not in VIEW_KINDS]
    if unknown or not names:
        raise BadInputError(f"--calib-view-kinds: unknown kind(s) {', '.join(unknown) or '(none)'}; choose from "
                            f"{', '.join(VIEW_KINDS)}")
    return names


def _binary(x: np.ndarray) -> bool:
    """Whether a float sample holds only 0 and 1 (one-hot codes, masks): blending or shifting would
    make values the model never sees."""
    return bool(np.all((x == 0) | (x == 1)))


class ViewRows(Rows):
    """`views` views of each of the `base` samples of one input, made as they are read."""

    def __init__(self, base, views: int, kinds: tuple[str, ...], seed: int):
        self.base, self.views, self.seed = base, views, seed
        self.geometric = tuple(k for k in kinds if k not in ("mix", "splice"))
        self.mix, self.splice = "mix" in kinds, "splice" in kinds
        self.n = len(base)
        self.shape, self.dtype = (self.n * views,) + tuple(base.shape[1:]), np.dtype(base.dtype)
        self.discrete = not np.issubdtype(self.dtype, np.floating)

    def read(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        samples, views = idx % self.n, idx // self.n
        draws = [self._draw(int(s), int(v)) for s, v in zip(samples, views)]
        need = np.unique(np.concatenate([samples, [d[1] for d in draws if d[1] is not None]]).astype(np.int64))
        rows = dict(zip(need.tolist(), self.base[need]))  # one read of the base rows this batch needs
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        for i, (s, (rng, partner, weight, span)) in enumerate(zip(samples.tolist(), draws)):
            out[i] = self._view(rows[s], rng, rows.get(partner), weight, span)
        return out

    def _draw(self, sample: int, view: int):
        """(rng for the geometric draws, partner, own weight, splice span as shares of the last axis) of
        one view; no rng for view 0. Every input of a sample draws the same, whatever its dtype."""
        if view == 0 or (self.discrete and not self.splice):
            return None, None, 1.0, None
        rng = np.random.default_rng([self.seed, sample, view])
        partner, weight, span = None, 1.0, None
        if (self.mix or self.splice) and self.n > 1:
            partner = (sample + 1 + int(rng.integers(self.n - 1))) % self.n
            weight = float(rng.uniform(*MIX_WEIGHT)) if self.mix else 1.0
            if self.splice:
                share = float(rng.uniform(*SPLICE_SHARE))
                span = (float(rng.uniform(0.0, 1.0 - share)), share)
        return rng, partner, weight, span

    def _view(self, row: np.ndarray, rng, partner: np.ndarray | None, weight: float, span) -> np.ndarray:
        if self.discrete:  # ids and masks alike: the same span of both comes from the partner
            return _spliced(row, partner, span)
        if rng is None or _binary(row):
            return row
        if partner is not None and self.mix:
            row = (weight * row + (1.0 - weight) * partner).astype(self.dtype)
        if self.geometric and row.ndim == 4:  # a sample with its batch axis: (1, C, H, W) or (1, H, W, C)
            row = augment_batch({"x": row}, self.geometric, rng)["x"]
        return row


def _spliced(row: np.ndarray, partner: np.ndarray | None, span) -> np.ndarray:
    """`row` with the span (start, length as shares) of its last axis taken from `partner`."""
    size = row.shape[-1] if row.ndim else 0
    if partner is None or span is None or size < SPLICE_MIN:
        return row
    start = int(span[0] * size)
    stop = min(size, start + max(1, int(round(span[1] * size))))
    out = row.copy()
    out[..., start:stop] = partner[..., start:stop]
    return out


class ViewDataset(Dataset):
    """A Dataset of views; `base` is the user's samples (reports and fine-tuning read those)."""

    base: Dataset


def calibration_views(data: Dataset | None, views: int | None, kinds: Sequence[str] = DEFAULT_KINDS,
                      seed: int = 0) -> Dataset | None:
    """`data` with `views` views of every sample (1: `data` itself); labels are dropped, since a
    blended view has no label. Data with no float input (token ids, bytes) is returned as it is unless
    `splice` is asked: its views would be copies, which add no rows and would leak into the ridge
    choice's held-out rows."""
    if data is None or views in (None, 1):
        return data
    if "splice" not in kinds and not any(np.issubdtype(v.dtype, np.floating) for v in data.inputs.values()):
        return data
    out = ViewDataset({k: ViewRows(v, views, tuple(kinds), seed) for k, v in data.inputs.items()}, None, data.joinable)
    out.base = data
    return out


__all__ = ["VIEW_KINDS", "DEFAULT_KINDS", "parse_kinds", "ViewRows", "ViewDataset", "calibration_views"]
