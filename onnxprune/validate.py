"""Validity (checker, ONNX Runtime, unchanged interface) and fidelity of a pruned model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from .data import Dataset
from .errors import BadInputError, ValidationError
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
    except Exception as exc:  # the dense model itself fails: the inputs are wrong, not the pruning
        raise BadInputError(f"the dense model fails on the evaluation inputs ({_first_line(exc)}); "
                            "pass real inputs with --calib/--data or sizes with --input-shape") from None
    try:
        pruned_out = run_dataset(pruned_sess, data, batch_size)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime failed to run the pruned model: {_first_line(exc)}") from None
    names = [o.name for o in dense_sess.get_outputs()]
    pairs = [(n, _numeric(d), _numeric(p)) for n, d, p in zip(names, dense_out, pruned_out)]
    pairs = [(n, d, p) for n, d, p in pairs if d is not None and p is not None]
    if not pairs:
        raise ValidationError("no output of the model can be compared as numbers")
    names, dense_out, pruned_out = (list(x) for x in zip(*pairs))
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


def _numeric(value) -> np.ndarray | None:
    """Outputs as numbers: tensors as they are, ZipMap-style lists of {label: score} as rows of scores."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    items = list(value) if value is not None else []
    if items and all(isinstance(x, dict) for x in items):
        return np.array([[x[k] for k in sorted(x)] for x in items], dtype=np.float64)
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_in_runtime(model: onnx.ModelProto, threads: int = 0):
    try:
        return session(model, threads)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime refuses the pruned model: {str(exc).strip().splitlines()[0]}") from None


# --- the `validate` command: every check on a (dense, pruned) pair, each one reported -----------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_strict_shapes(pruned: onnx.ModelProto, dense: onnx.ModelProto) -> str:
    """Strict, type-checked shape inference; a failure the dense model shares is reported, not blamed."""
    def infer(model):
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    try:
        infer(pruned)
        return "passed"
    except Exception as exc:
        reason = _first_line(exc)
    try:
        infer(dense)
    except Exception:
        return f"skipped: the dense model fails it too ({reason})"
    raise ValidationError(f"pruned model fails strict shape inference: {reason}")


def _interface(model: onnx.ModelProto, kind: str) -> list[tuple[str, int, list | None]]:
    """(name, element type, dims) of the graph inputs (initializers excluded) or outputs; dims are
    ints for static sizes, strings for named dynamic ones, None for unknown."""
    inits = {i.name for i in model.graph.initializer}
    values = model.graph.input if kind == "input" else model.graph.output
    rows = []
    for v in values:
        if kind == "input" and v.name in inits:
            continue
        t = v.type.tensor_type
        dims = None
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        rows.append((v.name, t.elem_type, dims))
    return rows


def check_interface(pruned: onnx.ModelProto, dense: onnx.ModelProto) -> None:
    """Same input and output count, names, element types and declared static sizes."""
    for kind in ("input", "output"):
        want, got = _interface(dense, kind), _interface(pruned, kind)
        if len(want) != len(got):
            raise ValidationError(f"pruned model has {len(got)} {kind}s, the dense model {len(want)}")
        for (name, etype, dims), (pname, ptype, pdims) in zip(want, got):
            if name != pname:
                raise ValidationError(f"pruned model's {kind} '{pname}' is named '{name}' in the dense model")
            if etype != ptype:
                names = onnx.TensorProto.DataType.Name
                raise ValidationError(f"{kind} '{name}' changed element type from {names(etype)} to {names(ptype)}")
            if dims is None or pdims is None:
                continue
            if len(dims) != len(pdims) or any(isinstance(a, int) and isinstance(b, int) and a and b and a != b
                                              for a, b in zip(dims, pdims)):
                raise ValidationError(f"{kind} '{name}' changed declared shape from {dims} to {pdims}")


def check_providers(pruned: onnx.ModelProto, dense: onnx.ModelProto, feed: dict, threads: int = 0) -> dict[str, str]:
    """Load and run the pruned model on the CPU and on every other installed execution provider.

    An accelerator provider that cannot take the dense model either (no device, unsupported op) is
    reported as skipped; one that takes the dense model but refuses the pruned one is an error.
    """
    import onnxruntime as ort

    results: dict[str, str] = {}
    available = ort.get_available_providers()
    for ep in ["CPUExecutionProvider"] + [p for p in available if p != "CPUExecutionProvider"]:
        providers = [ep] if ep == "CPUExecutionProvider" else [ep, "CPUExecutionProvider"]
        try:
            session(pruned, threads, providers=providers).run(None, feed)
            results[ep] = "passed"
            continue
        except Exception as exc:
            reason = _first_line(exc)
        try:
            session(dense, threads, providers=providers).run(None, feed)
        except Exception:
            if ep == "CPUExecutionProvider":  # the data (or the dense model) is at fault, not the pruning
                raise BadInputError(f"the dense model does not run on these inputs either ({reason})") from None
            results[ep] = f"skipped: the dense model does not run there either ({reason})"
            continue
        raise ValidationError(f"ONNX Runtime ({ep}) refuses the pruned model: {reason}")
    return results


def validate_pair(dense: onnx.ModelProto, pruned: onnx.ModelProto, data: Dataset, threads: int = 0) -> dict:
    """Every validity check and the fidelity on `data`: {"validation": {...}, "fidelity": {...}}.

    Raises ValidationError (exit 1) on the first check the pruned model fails.
    """
    check_valid(pruned, dense)
    shapes = check_strict_shapes(pruned, dense)
    check_interface(pruned, dense)
    feed = next(data.take(1).batches(1))
    providers = check_providers(pruned, dense, feed, threads)
    fidelity = compare(session(dense, threads), load_in_runtime(pruned, threads), data)
    validation = {"checker": "passed", "shape_inference": shapes, "onnxruntime": "passed",
                  "providers": providers, "interface": "unchanged"}
    return {"validation": validation, "fidelity": {"samples": len(data), **fidelity.as_dict()}}
