"""Loading and saving models: the input is never modified, outputs are written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from onnxprune.errors import BadInputError, first_line
from onnxprune.load.tensors import all_tensors

# Quantized integer ops whose weights cannot be sliced as floats; QDQ models are handled by rules.
_INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"}
_TWO_GB = 2**31 - 1


def load_model(path: str | os.PathLike, supported_only: bool = True) -> onnx.ModelProto:
    """Load an ONNX model with its external data; raise BadInputError with one clear line.

    `supported_only=False` skips `check_supported` (the checker and the integer-op refusal), for
    commands that measure or judge a model rather than prune it (bench, validate).
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if path.is_dir():
        from onnxprune.load.model_folder import is_model_folder
        hint = " (a model folder: `prune` takes it whole; other commands take its .onnx file)" if is_model_folder(path) else ""
        raise BadInputError(f"{path}: is a directory, expected an .onnx file{hint}")
    big = path.stat().st_size > 64 << 20
    if supported_only and big:  # checked before the proto exists: the checker's own copy never meets ours
        _check_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for garbage or truncated files
        first = first_line(exc)
        raise BadInputError(f"{path}: not a readable ONNX model ({first})") from None
    if not model.graph.node:
        raise BadInputError(f"{path}: not a readable ONNX model (the graph has no nodes; truncated or not ONNX?)")
    from onnxprune.load import external
    referenced = external.check_references(model, path)  # before any byte of it is read
    lazy = referenced >= external.LAZY_BYTES
    if referenced and not lazy:
        onnx.load_external_data_for_model(model, str(path.resolve().parent))
    if supported_only:  # checked from the file: checking the proto would serialize a second copy
        check_supported(model, str(path), checked_file=str(path) if referenced or big else None, checked=big)
    if lazy:  # read on demand from the file (external.py): the weights are never copied into the proto
        external.bind(model, path)
    from onnxprune.load.fold_limit import check_constant_subgraphs
    check_constant_subgraphs(model)  # a constant bomb is refused before anything evaluates it
    return model


def _check_file(path: Path) -> None:
    """The ONNX checker on a model file, any failure one line (a file it cannot even parse included)."""
    from onnxprune.load.checker import check_model_any_size
    try:
        check_model_any_size(None, f"{path}:", path=str(path), by_path=True)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001  (garbage or truncated: the checker's parser says so)
        raise BadInputError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


def check_supported(model: onnx.ModelProto, where: str = "model", checked_file: str | None = None,
                    checked: bool = False) -> None:
    """Refuse models whose weights this tool cannot rewrite, naming the first offending node.
    `checked_file`: the file `model` was loaded from, for the checker to read instead of the proto;
    `checked`: that file passed the checker already."""
    for node in model.graph.node:
        if node.op_type in _INTEGER_OPS and node.domain in ("", "ai.onnx"):
            raise BadInputError(
                f"{where}: node '{node.name or node.output[0]}' is {node.op_type}: integer-quantized weights "
                "cannot be pruned; prune the float model, then quantize the result"
            )
    if checked:
        return
    from onnxprune.load.checker import check_model_any_size
    check_model_any_size(model, f"{where}:", path=checked_file or where, by_path=checked_file is not None)


def save_model_atomic(model: onnx.ModelProto, path: str | os.PathLike, force: bool = False) -> Path:
    """Write `model` to `path` via a temporary file and a rename, so no half-written file is ever left.

    Models over 2 GB are saved with their tensors in one external data file beside the model; both are
    written under random temporary names first, then renamed (data first), so they land as one unit.
    The path is resolved and checked by the output guard (destinations.py).
    """
    from onnxprune.load import destinations

    real = destinations.check_output(path, force)
    from onnxprune.load.external import bound_bytes, has_bound, inlined, keeps_inline
    large = model.ByteSize() + bound_bytes(model) > _TWO_GB if _byte_size_ok(model) else True
    if has_bound(model) and not large and keeps_inline(model):  # it came as one file: it leaves as one
        with inlined(model):
            return destinations.write_file(real, lambda tmp: onnx.save_model(model, tmp))
    large = large or has_bound(model)  # weights read from its external data: written beside the model
    if not large:
        return destinations.write_file(real, lambda tmp: onnx.save_model(model, tmp))
    if destinations.is_stream(real):
        raise BadInputError(f"{path}: a model over 2 GB is written with an external data file beside it; "
                            "give a file path, not a device or pipe")
    data_name = real.name + ".data"
    data_path = destinations.check_output(real.parent / data_name, force)
    if data_path.exists() and not force:  # the model's .data sidecar is part of the output: no silent clobber
        raise BadInputError(f"{data_path}: already exists (the external data of {path}); pass --force to overwrite it")
    with destinations.temporary_beside(real) as tmp, destinations.temporary_beside(data_path) as tmp_data:
        _save_external(model, tmp, Path(tmp_data), data_name)
        destinations.place(tmp_data, data_path)  # data first: the model never points at a missing file
        destinations.place(tmp, real)
    return real


def _save_external(model: onnx.ModelProto, tmp: str, data_file: Path, location: str, threshold: int = 1024) -> None:
    """Save `model` to `tmp` with every raw tensor of `threshold` bytes or more in `data_file`, the
    model already referring to its final `location`. The caller's model is restored afterwards
    (onnx.save_model(save_as_external_data=True) would leave it pointing at a file and emptied)."""
    from onnxprune.load import external
    moved: list[tuple[onnx.TensorProto, bytes, bool]] = []
    rebound: list[tuple[onnx.TensorProto, list[tuple[str, str]]]] = []
    try:
        with open(data_file, "wb") as f:
            for t in all_tensors(model):
                if external.is_bound(t):  # copied from its file a block at a time, then pointed here
                    rebound.append((t, [(e.key, e.value) for e in t.external_data]))
                    f.write(b"\0" * (-f.tell() % 4096))
                    start = f.tell()
                    external.copy_bytes(t, f)
                    external.set_reference(t, location, start, f.tell() - start)
                    continue
                if not t.HasField("raw_data"):
                    continue
                raw = t.raw_data  # protobuf hands out a new copy at every access: take one
                if len(raw) < threshold:
                    continue
                offset = -f.tell() % 4096  # page-aligned, as onnx's own writer does
                f.write(b"\0" * offset)
                start = f.tell()
                f.write(raw)
                moved.append((t, raw, t.HasField("data_location")))
                del t.external_data[:]
                for key, value in (("location", location), ("offset", str(start)), ("length", str(len(raw)))):
                    entry = t.external_data.add()
                    entry.key, entry.value = key, value
                t.data_location = onnx.TensorProto.EXTERNAL
                t.ClearField("raw_data")
        onnx.save_model(model, tmp)
    finally:
        for t, entries in rebound:
            del t.external_data[:]
            for key, value in entries:
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        for t, raw, had_location in moved:
            del t.external_data[:]
            t.ClearField("data_location")
            if had_location:
                t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = raw


def _byte_size_ok(model: onnx.ModelProto) -> bool:
    try:
        model.ByteSize()
        return True
    except Exception:
        return False

