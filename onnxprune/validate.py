"""Validity (checker, ONNX Runtime, unchanged interface) and fidelity of a pruned model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from .data import Dataset
from .errors import ValidationError
from .runtime import run_dataset, session


@dataclass
class Fidelity:
    """How closely the pruned model's outputs follow the dense model's, per output and overall."""

    cosine: float
    rel_l2: float
    max_abs: float
    top1_agreement: float | None = None
    accuracy_dense: float | None = None
    accuracy_pruned: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def check_valid(pruned: onnx.ModelProto, dense: onnx.ModelProto) -> None:
    """Raise ValidationError unless `pruned` passes the full checker and keeps the dense interface."""
    try:
        onnx.checker.check_model(pruned, full_check=True)
    except Exception as exc:
        raise ValidationError(f"pruned model fails the ONNX checker: {str(exc).strip().splitlines()[0]}") from None
    for kind, a, b in (("input", dense.graph.input, pruned.graph.input), ("output", dense.graph.output, pruned.graph.output)):
        dense_names = [v.name for v in a if kind == "output" or v.name not in {i.name for i in dense.graph.initializer}]
        pruned_names = [v.name for v in b if kind == "output" or v.name not in {i.name for i in pruned.graph.initializer}]
        if dense_names != pruned_names:
            raise ValidationError(f"pruned model's {kind}s {pruned_names} differ from the dense model's {dense_names}")


def compare(dense_sess, pruned_sess, data: Dataset, batch_size: int = 32) -> Fidelity:
    """Run both models on `data`; raise ValidationError if output shapes differ."""
    try:
        dense_out = run_dataset(dense_sess, data, batch_size)
        pruned_out = run_dataset(pruned_sess, data, batch_size)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the pruned model: {str(exc).strip().splitlines()[0]}") from None
    names = [o.name for o in dense_sess.get_outputs()]
    for name, d, p in zip(names, dense_out, pruned_out):
        if d.shape != p.shape:
            raise ValidationError(f"output '{name}' changed shape from {d.shape} to {p.shape}")
    floats = [(d, p) for d, p in zip(dense_out, pruned_out) if np.issubdtype(d.dtype, np.floating)]
    if not floats:
        floats = [(d.astype(np.float64), p.astype(np.float64)) for d, p in zip(dense_out, pruned_out)]
    d = np.concatenate([x.reshape(-1) for x, _ in floats]).astype(np.float64)
    p = np.concatenate([y.reshape(-1) for _, y in floats]).astype(np.float64)
    denom = np.linalg.norm(d) * np.linalg.norm(p)
    cosine = float(d @ p / denom) if denom > 0 else float(np.array_equal(d, p))
    rel_l2 = float(np.linalg.norm(d - p) / max(np.linalg.norm(d), 1e-30))
    fid = Fidelity(cosine=cosine, rel_l2=rel_l2, max_abs=float(np.abs(d - p).max()) if d.size else 0.0)
    first_d, first_p = dense_out[0], pruned_out[0]
    if first_d.ndim == 2 and first_d.shape[1] > 1 and np.issubdtype(first_d.dtype, np.floating):
        fid.top1_agreement = float((first_d.argmax(1) == first_p.argmax(1)).mean())
        if data.labels is not None and len(data.labels) == len(first_d):
            fid.accuracy_dense = float((first_d.argmax(1) == data.labels).mean())
            fid.accuracy_pruned = float((first_p.argmax(1) == data.labels).mean())
    return fid


def load_in_runtime(model: onnx.ModelProto, threads: int = 0):
    try:
        return session(model, threads)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime refuses the pruned model: {str(exc).strip().splitlines()[0]}") from None
