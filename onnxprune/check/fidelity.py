"""Fidelity: how closely the pruned model's outputs follow the dense model's, per output and overall.

Both models run batch by batch over the same data and only running sums are kept (dot products,
norms, the largest difference, agreement counts), so memory does not grow with the number of
samples. Every output is reported on its own: one cosine over a detector's concatenated outputs is
dominated by the box coordinates and says nothing about the scores. A YOLO-style head packs both in
one output ([N, 4 + classes, anchors]): the fields of an output of rank 3 or more (its axis-1 rows)
whose scales differ by more than output_parts.PART_GAP are reported as *parts*, each with its own
cosine (a candidate with cosine 0.997 overall found a third of the faces: its class rows had moved).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from onnxprune.errors import BadInputError, ValidationError, first_line
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import batchable
from onnxprune.score.output_parts import parts as scale_parts


@dataclass
class Fidelity:
    """Overall figures (all float outputs together, as before) and `outputs`: the same per output."""

    cosine: float
    rel_l2: float
    max_abs: float
    top1_agreement: float | None = None
    accuracy_dense: float | None = None
    accuracy_pruned: float | None = None
    outputs: dict[str, dict] = field(default_factory=dict)
    parts: dict[str, list[dict]] = field(default_factory=dict)  # output -> its fields' parts, if several

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


@dataclass
class _Running:
    """Sums for one output (or all of them) over the batches seen so far."""

    dot: float = 0.0
    dense_sq: float = 0.0
    pruned_sq: float = 0.0
    diff_sq: float = 0.0
    max_abs: float = 0.0
    equal: bool = True
    rows: int = 0
    agree: int = 0
    correct_dense: int = 0
    correct_pruned: int = 0

    def add(self, d: np.ndarray, p: np.ndarray) -> None:
        d, p = d.reshape(-1).astype(np.float64), p.reshape(-1).astype(np.float64)
        self.dot += float(d @ p)
        self.dense_sq += float(d @ d)
        self.pruned_sq += float(p @ p)
        self.diff_sq += float((d - p) @ (d - p))
        self.max_abs = max(self.max_abs, float(np.abs(d - p).max()) if d.size else 0.0)
        self.equal = self.equal and bool(np.array_equal(d, p))

    def figures(self) -> dict:
        denom = np.sqrt(self.dense_sq) * np.sqrt(self.pruned_sq)
        return {"cosine": float(self.dot / denom) if denom > 0 else float(self.equal),
                "rel_l2": float(np.sqrt(self.diff_sq) / max(np.sqrt(self.dense_sq), 1e-30)),
                "max_abs": self.max_abs}


class _Fields:
    """Per-row sums of one output of rank >= 3 (rows: axis 1, the fields of a packed detector head)."""

    def __init__(self) -> None:
        self.sums: np.ndarray | None = None  # rows x (dot, dense_sq, pruned_sq, diff_sq, dense_sum, count)

    def add(self, d: np.ndarray, p: np.ndarray) -> None:
        d = d.reshape(d.shape[0], d.shape[1], -1).astype(np.float64)
        p = p.reshape(d.shape).astype(np.float64)
        diff = d - p  # the one temporary: einsum sums the products without making them
        rows = "nrk,nrk->r"
        batch = np.stack([np.einsum(rows, d, p), np.einsum(rows, d, d), np.einsum(rows, p, p),
                          np.einsum(rows, diff, diff), d.sum((0, 2)),
                          np.full(d.shape[1], d.shape[0] * d.shape[2], np.float64)], 1)
        if self.sums is not None and self.sums.shape != batch.shape:  # axis 1 is the batch (a time-major
            self.mixed = True  # CRNN's (T, N, C)), not fields: its size follows each batch's
        self.sums = batch if self.sums is None or self.mixed else self.sums + batch

    mixed = False  # rows of different counts met: axis 1 is no field axis, no parts

    def parts(self, name: str) -> list[dict]:
        """Each part's cosine and relative error, or [] when the rows are of one scale."""
        if self.mixed:
            return []
        dot, dsq, psq, diff, total, count = self.sums.T
        std = np.sqrt(np.maximum(dsq / count - (total / count) ** 2, 0.0))
        found = scale_parts({name: std}, floor=1e-12) if std.max() > 0 else []
        if len(found) < 2:
            return []
        out = []
        for _, rows in sorted(found, key=lambda part: int(part[1][0])):
            run = _Running(dot=float(dot[rows].sum()), dense_sq=float(dsq[rows].sum()),
                           pruned_sq=float(psq[rows].sum()), diff_sq=float(diff[rows].sum()),
                           equal=float(diff[rows].sum()) == 0.0)
            figures = run.figures()
            out.append({"rows": _ranges(rows), "cosine": figures["cosine"], "rel_l2": figures["rel_l2"]})
        return out


def _ranges(rows: np.ndarray) -> str:
    """[0, 1, 2, 3, 7] as '0-3,7'."""
    spans, start = [], int(rows[0])
    for a, b in zip(rows[:-1], rows[1:]):
        if b != a + 1:
            spans.append((start, int(a)))
            start = int(b)
    spans.append((start, int(rows[-1])))
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def _numeric(value) -> np.ndarray | None:
    """Outputs as numbers: tensors as they are, ZipMap-style lists of {label: score} as rows of scores."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    items = list(value) if value is not None else []
    if items and all(isinstance(x, dict) for x in items):
        return np.array([[x[k] for k in sorted(x)] for x in items], dtype=np.float64)
    return None


def _is_classifier(value: np.ndarray) -> bool:
    return value.ndim == 2 and value.shape[1] > 1 and np.issubdtype(value.dtype, np.floating)


def run_explained(sess, feed: dict, what: str) -> list:
    """`sess` on `feed`; a failure says whose: the dense model's is bad input (exit 2), the pruned
    model's a failed validation (exit 1), never a bare ONNX Runtime error."""
    return _run(sess, feed, what)


def _run(sess, feed: dict, what: str) -> list:
    try:
        return sess.run(None, feed)
    except Exception as exc:
        if what == "dense":  # the dense model itself fails: the inputs are wrong, not the pruning
            raise BadInputError(f"the dense model fails on the evaluation inputs ({first_line(exc)}); "
                                "pass real inputs with --calib/--data or sizes with --input-shape") from None
        raise ValidationError(f"ONNX Runtime failed to run the pruned model: {first_line(exc)}") from None


def _runs_batched(sess, data: Dataset, batch_size: int) -> bool:
    """Whether the model accepts samples joined into one batch: a dynamic batch axis may still take
    only 1 (GroupQueryAttention with a KV cache refuses more when several tokens are new)."""
    feed = next(iter(data.batches(batch_size, True)))
    if all(np.shape(v)[:1] == (1,) for v in feed.values()):
        return True
    try:
        sess.run(None, feed)
        return True
    except Exception:
        return False


FEED_BYTES = 8 << 20  # input bytes per fidelity batch: 32 images of 640x640 would grow each session by GBs


def batch_within(data: Dataset, batch_size: int) -> int:
    """`batch_size` cut so one batch's inputs stay within FEED_BYTES (at least one sample)."""
    sample = sum(int(np.prod(v.shape[1:])) * np.dtype(v.dtype).itemsize for v in data.inputs.values())
    return int(np.clip(FEED_BYTES // max(sample, 1), 1, batch_size))


def compare(dense_sess, pruned_sess, data: Dataset, batch_size: int = 32) -> Fidelity:
    """Run both models over `data`; raise ValidationError if an output changes shape."""
    batch_size = batch_within(data, batch_size)
    names = [o.name for o in dense_sess.get_outputs()]
    per_output = {n: _Running() for n in names}
    fields = {n: _Fields() for n in names}
    overall = _Running()
    labels = data.labels
    seen = 0
    numeric_names: list[str] = []
    replayed = getattr(dense_sess, "replayed", False)  # recorded outputs: probing would consume a batch
    together = (batchable(dense_sess) and batchable(pruned_sess)
                and (replayed or _runs_batched(dense_sess, data, batch_size)))
    for feed in data.batches(batch_size, together):
        dense_out, pruned_out = _run(dense_sess, feed, "dense"), _run(pruned_sess, feed, "pruned")
        pairs = [(n, _numeric(d), _numeric(p)) for n, d, p in zip(names, dense_out, pruned_out)]
        pairs = [(n, d, p) for n, d, p in pairs if d is not None and p is not None]
        if not pairs:
            raise ValidationError("no output of the model can be compared as numbers")
        numeric_names = [n for n, _, _ in pairs]
        any_float = any(np.issubdtype(d.dtype, np.floating) for _, d, _ in pairs)
        for name, d, p in pairs:
            if d.shape != p.shape:
                raise ValidationError(f"output '{name}' changed shape from {d.shape} to {p.shape}")
            per_output[name].add(d, p)
            if d.ndim >= 3 and np.issubdtype(d.dtype, np.floating) and d.shape[0] and d.shape[1] > 1:
                fields[name].add(d, p)
            if np.issubdtype(d.dtype, np.floating) or not any_float:
                overall.add(d, p)
        first, first_p = pairs[0][1], pairs[0][2]
        if _is_classifier(first):
            _count_top1(per_output[pairs[0][0]], first, first_p, labels, seen)
        seen += len(first) if first.ndim else 1
    fid = Fidelity(**overall.figures())
    if len(numeric_names) > 1:
        fid.outputs = {n: per_output[n].figures() for n in numeric_names}
    fid.parts = {n: found for n in numeric_names if fields[n].sums is not None and (found := fields[n].parts(n))}
    head = per_output[numeric_names[0]]
    if head.rows:
        fid.top1_agreement = head.agree / head.rows
        if labels is not None and len(labels) == head.rows:
            fid.accuracy_dense, fid.accuracy_pruned = head.correct_dense / head.rows, head.correct_pruned / head.rows
    return fid


def _count_top1(run: _Running, d: np.ndarray, p: np.ndarray, labels: np.ndarray | None, offset: int) -> None:
    top_d, top_p = d.argmax(1), p.argmax(1)
    run.rows += len(d)
    run.agree += int((top_d == top_p).sum())
    if labels is not None and offset + len(d) <= len(labels):
        truth = np.asarray(labels[offset:offset + len(d)])
        run.correct_dense += int((top_d == truth).sum())
        run.correct_pruned += int((top_p == truth).sum())
