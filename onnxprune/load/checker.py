"""The ONNX checker as onnxprune needs it: for ops ONNX Runtime adds to the default domain, and for
models of any size. A model over 2 GB cannot be serialized in memory: the checker raises ValueError
(protobuf < 7) or EncodeError (protobuf 7), so such a model is checked by path, where the checker
reads its external data itself."""

from __future__ import annotations

import os

import onnx

from onnxprune.errors import BadInputError, first_line


# Ops ONNX Runtime registers in the default domain that the ONNX checker does not know (ONNX Runtime
# GenAI writes SimplifiedLayerNormalization there); ONNX Runtime, which runs them, judges those nodes.
RUNTIME_DEFAULT_OPS = frozenset({"SimplifiedLayerNormalization"})
_SET_ASIDE = "onnxprune.runtime"


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """onnx.checker.check_model, with RUNTIME_DEFAULT_OPS checked as ops of a private domain (which the
    checker leaves alone) and put back afterwards: the model is not copied, however large."""
    moved = [n for n in model.graph.node if n.op_type in RUNTIME_DEFAULT_OPS and n.domain in ("", "ai.onnx")]
    if not moved:
        onnx.checker.check_model(model, full_check=full_check)
        return
    model.opset_import.add(domain=_SET_ASIDE, version=1)
    try:
        for node in moved:
            node.domain = _SET_ASIDE
        onnx.checker.check_model(model, full_check=full_check)
    finally:
        for node in moved:
            node.domain = ""
        del model.opset_import[len(model.opset_import) - 1]


class _CheckByPath(Exception):
    """The caller holds the model's file: the checker reads it instead of a serialized copy."""


def _too_large(exc: Exception) -> bool:
    return isinstance(exc, ValueError) or type(exc).__name__ == "EncodeError"


def _bound(model: onnx.ModelProto) -> bool:
    from onnxprune.load.external import has_bound
    return has_bound(model)


def check_model_any_size(model: onnx.ModelProto, prefix: str, path: str | os.PathLike | None = None,
                         by_path: bool = False) -> None:
    """BadInputError "{prefix} fails the ONNX checker (...)"; models over 2 GB, or any model with
    `by_path`, are checked at `path` (skipped without one: loading already parsed the protobuf); one whose
    weights are bound to files (load/external.py) as a spilled copy."""
    if model is not None and not by_path and _bound(model):  # weights read from files by absolute path,
        from onnxprune.load.spill import spilled  # which the in-memory checker refuses: a copy it reads by path
        with spilled(model, for_checker=True) as copy:
            check_model_any_size(None, prefix, path=copy, by_path=True)
        return
    try:
        if by_path and path is not None:
            raise _CheckByPath()
        check_model(model)
        return
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{prefix} fails the ONNX checker ({first_line(exc)})") from None
    except Exception as exc:
        if not (_too_large(exc) or isinstance(exc, _CheckByPath)):
            raise
    if path is None or not os.path.isfile(path):
        return
    try:
        onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as exc:
        if any(f"No Op registered for {op} " in str(exc) for op in RUNTIME_DEFAULT_OPS):
            return  # by path the ops cannot be set aside: ONNX Runtime, which runs them, judges the model
        raise BadInputError(f"{prefix} fails the ONNX checker ({first_line(exc)})") from None
