"""Large models handed to ONNX Runtime through a temporary file with external data.

`InferenceSession(model.SerializeToString())` holds the model three times while the session is
built (the proto, the serialized bytes, ORT's parsed copy) and leaves ORT with its own copy of the
bytes besides its weights: VGG-19 (548 MB) peaked 1.6 GB above the proto. From a file whose tensors
are external data ORT reads each weight once, straight into place (peak 0.9 GB, 0.56 GB after).
The caller's model is not modified and the file is removed once the session is built.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

import onnx

SPILL_BYTES = 64 << 20  # smaller models go to ORT as bytes: no disk round trip for them
EXTERNAL_MIN_BYTES = 1024  # tensors below this stay inside the model file


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size; models over protobuf's 2 GB limit cannot say, and count as large."""
    try:
        return model.ByteSize()
    except Exception:  # noqa: BLE001  (protobuf raises ValueError or EncodeError past 2 GB)
        return 1 << 31


@contextmanager
def spilled(model: onnx.ModelProto) -> Iterator[str]:
    """The path of a temporary copy of `model` with its initializers in one external data file."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as folder:
        path = os.path.join(folder, "model.onnx")
        write_with_external_data(model, path, "model.onnx.data")
        yield path


def write_with_external_data(model: onnx.ModelProto, path: str, location: str) -> None:
    """Write `model` to `path`, every initializer of EXTERNAL_MIN_BYTES or more in `location` beside
    it (page-aligned, as onnx's writer does), one tensor's bytes in memory at a time."""
    skeleton = _without_initializers(model)
    with open(os.path.join(os.path.dirname(path), location), "wb") as data:
        for init in model.graph.initializer:
            tensor = skeleton.graph.initializer.add()
            raw = init.raw_data if init.HasField("raw_data") else b""
            if len(raw) < EXTERNAL_MIN_BYTES:
                tensor.CopyFrom(init)
                continue
            data.write(b"\0" * (-data.tell() % 4096))
            offset = data.tell()
            data.write(raw)
            tensor.name, tensor.data_type = init.name, init.data_type
            tensor.dims.extend(init.dims)
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del raw
    with open(path, "wb") as f:
        f.write(skeleton.SerializeToString())


def _without_initializers(source: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `source` with every field but the main graph's initializers (CopyFrom of the whole
    proto would copy every weight)."""
    model = onnx.ModelProto()
    _copy_fields(source, model, skip="graph")
    _copy_fields(source.graph, model.graph, skip="initializer")
    return model


def _copy_fields(source, target, skip: str) -> None:
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
