"""The ONNX checker for models of any size. A model over 2 GB cannot be serialized in memory: the
checker raises ValueError (protobuf < 7) or EncodeError (protobuf 7), so such a model is checked
by path, where the checker reads its external data itself."""

from __future__ import annotations

import os

import onnx

from onnxprune.errors import BadInputError


def _too_large(exc: Exception) -> bool:
    return isinstance(exc, ValueError) or type(exc).__name__ == "EncodeError"


def check_model_any_size(model: onnx.ModelProto, prefix: str, path: str | os.PathLike | None = None) -> None:
    """BadInputError "{prefix} fails the ONNX checker (...)"; models over 2 GB are checked at `path`
    (skipped without one: loading already parsed the protobuf)."""
    try:
        onnx.checker.check_model(model)
        return
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{prefix} fails the ONNX checker ({_first(exc)})") from None
    except Exception as exc:
        if not _too_large(exc):
            raise
    if path is None or not os.path.isfile(path):
        return
    try:
        onnx.checker.check_model(os.fspath(path))
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"{prefix} fails the ONNX checker ({_first(exc)})") from None


def _first(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
