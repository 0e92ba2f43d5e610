"""Large models handed to ONNX Runtime through a temporary file with external data.

`InferenceSession(model.SerializeToString())` holds the model three times while the session is
built (the proto, the serialized bytes, ORT's parsed copy) and leaves ORT with its own copy of the
bytes besides its weights: VGG-19 (548 MB) peaked 1.6 GB above the proto. From a file whose tensors
are external data ORT reads each weight once, straight into place (peak 0.9 GB, 0.56 GB after).
The caller's model is not modified and the file is removed once the session is built.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import onnx

from onnxprune.load.workdirs import PrivateDir

SPILL_BYTES = 64 << 20  # smaller models go to ORT as bytes: no disk round trip for them
EXTERNAL_MIN_BYTES = 1024  # tensors below this stay inside the model file


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size, weights read from files included; models over protobuf's 2 GB limit cannot
    say, and count as large."""
    from onnxprune.load.external import bound_bytes
    weights = sum(raw_bytes(t) for t in model.graph.initializer)
    if weights > SPILL_BYTES:  # ByteSize serializes the whole model (upb): a second copy, just to count
        return weights + bound_bytes(model) + sum(n.ByteSize() for n in model.graph.node)
    try:
        return model.ByteSize() + bound_bytes(model)
    except Exception:  # noqa: BLE001  (protobuf raises ValueError or EncodeError past 2 GB)
        return 1 << 31


def raw_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor stored as raw_data, from its shape (reading raw_data would copy it)."""
    if not t.HasField("raw_data"):
        return 0
    size = _itemsize(t.data_type)
    return math.prod(t.dims) * size if size else t.ByteSize()


@lru_cache(maxsize=None)
def _itemsize(data_type: int) -> int:
    """Bytes per element of an ONNX element type; 0 for types numpy has no size for (counted by protobuf).
    Cached: a graph of 100,000 nodes asks for it 150,000 times."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).itemsize
    except Exception:  # noqa: BLE001  (types numpy has no size for)
        return 0


def needs_spill(model: onnx.ModelProto) -> bool:
    """Whether ONNX Runtime and the checker get `model` as a file: large ones, and any whose weights
    are read from files (their in-memory locations are absolute, which both refuse)."""
    from onnxprune.load.external import has_bound
    return has_bound(model) or model_bytes(model) > SPILL_BYTES


@contextmanager
def spilled(model: onnx.ModelProto, for_checker: bool = False) -> Iterator[str]:
    """The path of a temporary copy of `model` with its initializers in one external data file.
    Weights read from files are hard-linked beside it, or `for_checker` stand in as sparse files of
    the same size: the checker reads no tensor bytes but refuses hard links."""
    with PrivateDir("spill") as folder:
        path = os.path.join(folder, "model.onnx")
        write_with_external_data(model, path, "model.onnx.data", link="placeholder" if for_checker else True)
        yield path


def write_with_external_data(model: onnx.ModelProto, path: str, location: str, link: bool | str = False) -> None:
    """Write `model` to `path`, every initializer of EXTERNAL_MIN_BYTES or more in `location` beside
    it (page-aligned, as onnx's writer does), one tensor's bytes in memory at a time. Tensors read
    from files (external.py) are copied a block at a time, or with `link` hard-linked beside `path`
    (ONNX Runtime refuses absolute and symlinked locations; a hard link costs no copy)."""
    from onnxprune.load import external
    skeleton = _without_initializers(model)
    folder, links = os.path.dirname(path), {}
    with open(os.path.join(folder, location), "wb") as data:
        for init in model.graph.initializer:
            tensor = skeleton.graph.initializer.add()
            if external.is_bound(init):
                tensor.CopyFrom(init)
                source = external.info(init)["location"]
                if link and source not in links:
                    links[source] = _linked(source, folder, f"linked{len(links)}.data", link == "placeholder")
                if links.get(source):
                    external.set_reference(tensor, links[source], int(external.info(init).get("offset", 0)),
                                           int(external.info(init)["length"]))
                else:
                    data.write(b"\0" * (-data.tell() % 4096))
                    offset = data.tell()
                    external.copy_bytes(init, data)
                    external.set_reference(tensor, location, offset, data.tell() - offset)
                continue
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


def _linked(source: str, folder: str, name: str, placeholder: bool = False) -> str | None:
    """`name`, a hard link in `folder` to `source` (or a sparse file of its size); None where links
    are impossible (another file system): the caller copies instead."""
    try:
        if placeholder:
            with open(os.path.join(folder, name), "wb") as f:
                f.truncate(os.path.getsize(source))
        else:
            os.link(source, os.path.join(folder, name))
        return name
    except OSError:
        return None


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
