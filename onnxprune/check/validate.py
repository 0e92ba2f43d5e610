"""Validity (checker, ONNX Runtime, unchanged interface) and fidelity of a pruned model."""

from __future__ import annotations

import onnx

from onnxprune.load.data import Dataset
from onnxprune.check.fidelity import compare
from onnxprune.errors import BadInputError, ValidationError, first_line
from onnxprune.load.checker import check_model
from onnxprune.load.runtime import session
from onnxprune.load.spill import needs_spill, spilled


def check_valid(pruned: onnx.ModelProto, dense: onnx.ModelProto) -> None:
    """Raise ValidationError unless `pruned` passes the full checker and keeps the dense interface."""
    try:
        if needs_spill(pruned):  # by path: the checker would hold two serialized copies
            with spilled(pruned, for_checker=True) as path:
                onnx.checker.check_model(path, full_check=True)
        else:
            check_model(pruned, full_check=True)
    except Exception as exc:
        raise ValidationError(f"pruned model fails the ONNX checker: {first_line(exc)}") from None
    dense_inits = {i.name for i in dense.graph.initializer}  # once: IR 3 models list every initializer as an input
    pruned_inits = {i.name for i in pruned.graph.initializer}
    for kind, a, b in (("input", dense.graph.input, pruned.graph.input), ("output", dense.graph.output, pruned.graph.output)):
        dense_names = [v.name for v in a if kind == "output" or v.name not in dense_inits]
        pruned_names = [v.name for v in b if kind == "output" or v.name not in pruned_inits]
        if dense_names != pruned_names:
            raise ValidationError(f"pruned model's {kind}s {pruned_names} differ from the dense model's {dense_names}")


def load_in_runtime(model: onnx.ModelProto, threads: int = 0):
    try:
        return session(model, threads)
    except Exception as exc:
        raise ValidationError(f"ONNX Runtime refuses the pruned model: {first_line(exc)}") from None


# --- the `validate` command: every check on a (dense, pruned) pair, each one reported -----------------

def check_strict_shapes(pruned: onnx.ModelProto, dense: onnx.ModelProto) -> str:
    """Strict, type-checked shape inference; a failure the dense model shares is reported, not blamed."""
    def infer(model):
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    try:
        infer(pruned)
        return "passed"
    except Exception as exc:
        reason = first_line(exc)
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
            reason = first_line(exc)
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
