"""External data: checked before anything is read, and for large models never loaded into the proto.

Every reference is checked first (issue 11, bad input): the location must stay inside the model's
folder once symlinks are followed, the file must exist and hold `offset + length` bytes, and the
length must match the tensor's shape. A failure is one line naming the tensor and the file, and
nothing outside the folder is opened.

A model whose external data totals LAZY_BYTES or more is *bound* instead of loaded: each external
tensor's location becomes the data file's absolute path (in memory only; writers turn it back into a
relative location, spill.py and model.py), and values are read on demand through a read-only memory
map (`read`), so the weights are held once, by the page cache, whatever the model's size. The pruned
model's sliced tensors go to a work file (`WorkFile`) the same way.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import BadInputError, one_line
from onnxprune.load.tensors import all_tensors
from onnxprune.load.workdirs import process_dir

LAZY_BYTES = 64 << 20  # smaller external data is loaded into the proto, as onnx.load does
CHUNK = 64 << 20  # bytes copied at a time between data files
PAGE = 1 << 20  # all-zero blocks of this size are skipped (left as holes), so sparse stays sparse


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """External tensors of the main graph and every subgraph (initializers and Constant values)."""
    return (t for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL)


def info(t: onnx.TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in t.external_data}


def _expected_bytes(t: onnx.TensorProto) -> int | None:
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:  # noqa: BLE001  (strings, 4-bit types: no fixed size per element to check)
        return None
    if t.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return None
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def check_references(model: onnx.ModelProto, model_path: str | os.PathLike) -> int:
    """BadInputError unless every external reference is inside the model's folder and readable;
    returns the total bytes referenced. Only file metadata is read."""
    folder = Path(model_path).resolve().parent
    total = 0
    for t in external_tensors(model):
        meta = info(t)
        location = meta.get("location", "")
        where = f"{model_path}: tensor '{one_line(t.name)}': external data '{one_line(location)}'"
        target = (folder / location).resolve()
        if not location or os.path.isabs(location) or not target.is_relative_to(folder):
            raise BadInputError(f"{where} is outside the model's folder; external data must sit beside the model")
        if not target.is_file():
            raise BadInputError(f"{where}: no such file")
        try:
            offset, length = int(meta.get("offset", 0)), meta.get("length")
        except ValueError:
            raise BadInputError(f"{where}: offset '{one_line(meta.get('offset'))}' is not a number") from None
        expected = _expected_bytes(t)
        length = int(length) if length is not None else (expected if expected is not None else 0)
        if offset < 0 or length < 0 or (expected is not None and length != expected):
            raise BadInputError(f"{where}: offset {offset} and length {length} do not fit the tensor's "
                                f"{expected} bytes")
        size = target.stat().st_size
        if offset + length > size:
            raise BadInputError(f"{where}: the file is truncated ({size} bytes, the tensor needs "
                                f"{offset + length})")
        total += length
    return total


def bind(model: onnx.ModelProto, model_path: str | os.PathLike) -> None:
    """Point every external reference at its file's absolute path (checked by check_references)."""
    folder = Path(model_path).resolve().parent
    for t in external_tensors(model):
        _set(t, location=str((folder / info(t)["location"]).resolve()))


def is_bound(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL and os.path.isabs(info(t).get("location", ""))


def has_bound(model: onnx.ModelProto) -> bool:
    return any(is_bound(t) for t in model.graph.initializer)


def bound_bytes(model: onnx.ModelProto) -> int:
    return sum(int(info(t).get("length", 0)) for t in model.graph.initializer if is_bound(t))


def _set(t: onnx.TensorProto, **values: str) -> None:
    meta = {**info(t), **values}
    del t.external_data[:]
    for key, value in meta.items():
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    t.data_location = onnx.TensorProto.EXTERNAL


def set_reference(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Point `t` at `length` bytes at `offset` of `location`."""
    _set(t, location=location, offset=str(offset), length=str(length))


def tensor_value(t: onnx.TensorProto) -> np.ndarray:
    """A tensor's value wherever it lives: inline, or bound to a work file by absolute path (which onnx's
    own reader refuses)."""
    return np.asarray(read(t)) if is_bound(t) else numpy_helper.to_array(t)


def read(t: onnx.TensorProto) -> np.ndarray:
    """A bound tensor's value as a read-only memory map of its file (pages are read when touched)."""
    meta = info(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(meta["location"], dtype=dtype, mode="r", offset=int(meta.get("offset", 0)), shape=shape)


def sliced_blocks(t: onnx.TensorProto, cuts: list[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
    """A bound tensor with each (axis, sorted kept indices) cut applied, as consecutive blocks of
    axis-0 rows, each read with one positioned read of about CHUNK bytes (the page cache holds the
    file, not this process)."""
    meta = info(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    shape = tuple(int(d) for d in t.dims)
    row = int(np.prod(shape[1:], dtype=np.int64))
    rows_kept = dict(cuts).get(0)
    step = max(1, CHUNK // max(1, row * dtype.itemsize))
    with open(meta["location"], "rb", buffering=0) as f:  # positioned reads only (pread)
        for r0 in range(0, shape[0], step):
            r1 = min(shape[0], r0 + step)
            picked = None if rows_kept is None else rows_kept[(rows_kept >= r0) & (rows_kept < r1)] - r0
            if picked is not None and not len(picked):
                continue
            start = int(meta.get("offset", 0)) + r0 * row * dtype.itemsize
            if _is_hole(f.fileno(), start, (r1 - r0) * row * dtype.itemsize):  # zeros, known without reading
                kept_rows = r1 - r0 if picked is None else len(picked)
                yield kept_rows * int(np.prod(_cut_shape(shape[1:], cuts), dtype=np.int64)) * dtype.itemsize
                continue
            raw = os.pread(f.fileno(), (r1 - r0) * row * dtype.itemsize, start)
            block = np.frombuffer(raw, dtype).reshape((r1 - r0,) + shape[1:])
            if picked is not None:
                block = block[picked]
            for axis, idx in cuts:
                if axis:
                    block = np.take(block, idx, axis=axis)
            yield block


def _cut_shape(dims: tuple[int, ...], cuts: list[tuple[int, np.ndarray]]) -> tuple[int, ...]:
    """`dims` (axes 1...) after the cuts on those axes."""
    kept = dict(cuts)
    return tuple(len(kept[a + 1]) if a + 1 in kept else d for a, d in enumerate(dims))


def _is_hole(fd: int, start: int, length: int) -> bool:
    """Whether bytes [start, start + length) of the file are a hole (sparse zeros, never written)."""
    try:  # moves the descriptor's offset: callers seek before they read
        return os.lseek(fd, start, os.SEEK_DATA) >= start + length
    except OSError as exc:  # ENXIO: nothing but a hole after `start`; others: cannot say, so read it
        return exc.errno == errno.ENXIO


def copy_bytes(t: onnx.TensorProto, out) -> None:
    """Append a bound tensor's bytes to the open file `out`, CHUNK bytes at a time."""
    meta = info(t)
    remaining = int(meta["length"])
    position = int(meta.get("offset", 0))
    with open(meta["location"], "rb", buffering=0) as src:  # positioned reads only (pread)
        while remaining:
            step = min(CHUNK, remaining)
            if _is_hole(src.fileno(), position, step):  # holes stay holes, unread
                out.seek(step, os.SEEK_CUR)
                out.truncate(max(out.tell(), os.fstat(out.fileno()).st_size))
                position, remaining = position + step, remaining - step
                continue
            block = os.pread(src.fileno(), step, position)
            position += len(block)
            if not block:
                raise OSError(f"{meta['location']}: shorter than its tensors (changed while in use?)")
            write_sparse(out, memoryview(block))
            remaining -= len(block)


def write_sparse(out, data: memoryview) -> None:
    """Write `data` at `out`'s position, seeking over all-zero blocks instead of writing them (the
    file is extended to its full length either way)."""
    data = data.cast("B")
    for start in range(0, len(data), PAGE):
        block = data[start:start + PAGE]
        if np.frombuffer(block, np.uint8).any():
            out.write(block)
        else:
            out.seek(len(block), os.SEEK_CUR)
    out.truncate(max(out.tell(), os.fstat(out.fileno()).st_size))


INLINE = "inline-"  # work files of a model that came inline: it is saved inline again (below 2 GB)


def keeps_inline(model: onnx.ModelProto) -> bool:
    """Whether every weight `model` reads from a file came from an inline model (`unload`)."""
    return all(os.path.basename(info(t)["location"]).startswith(INLINE)
               for t in model.graph.initializer if is_bound(t))


@contextmanager
def inlined(model: onnx.ModelProto) -> Iterator[onnx.ModelProto]:
    """`model` with its bound tensors' bytes back in the proto, for writing it as one file; as it
    was afterwards."""
    bound = [(t, [(e.key, e.value) for e in t.external_data]) for t in model.graph.initializer if is_bound(t)]
    try:
        for t, _ in bound:
            _read_back(t)
        yield model
    finally:
        for t, entries in bound:
            t.ClearField("raw_data")
            for key, value in entries:
                t.external_data.add(key=key, value=value)
            t.data_location = onnx.TensorProto.EXTERNAL


def materialize(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every bound tensor's bytes back in the proto for good (in place): a model handed
    over in memory comes back whole in memory, needing none of this process's work files."""
    for t in model.graph.initializer:
        if is_bound(t):
            _read_back(t)
    return model


def _read_back(t: onnx.TensorProto) -> None:
    meta = info(t)
    with open(meta["location"], "rb", buffering=0) as f:
        t.raw_data = os.pread(f.fileno(), int(meta["length"]), int(meta.get("offset", 0)))
    del t.external_data[:]
    t.ClearField("data_location")


class WorkFile:
    """A data file in a private temporary folder that new tensors are appended to and bound to (the
    pruned model's sliced weights); the folder is removed when the process exits."""

    _folder: str | None = None
    _scratch: list[list[str]] = []  # files made inside `scratch()` scopes, innermost last

    def __init__(self, name: str = "work") -> None:
        if WorkFile._folder is None:
            WorkFile._folder = process_dir("work")
        fd, self.path = tempfile.mkstemp(prefix=name, suffix=".data", dir=WorkFile._folder)
        os.close(fd)
        if WorkFile._scratch:
            WorkFile._scratch[-1].append(self.path)

    def add(self, t: onnx.TensorProto, value: np.ndarray | Iterable[np.ndarray]) -> None:
        """Write `value` (an array, or consecutive blocks of one) to the file and make `t` (named,
        typed, shaped by the caller) refer to it."""
        with open(self.path, "r+b") as f:
            end = f.seek(0, os.SEEK_END)
            offset = end + (-end % 4096)  # page-aligned, as onnx's own writer does
            f.seek(offset)
            for block in ([value] if isinstance(value, np.ndarray) else value):
                if isinstance(block, int):  # that many zero bytes: left a hole
                    f.seek(block, os.SEEK_CUR)
                    f.truncate(max(f.tell(), os.fstat(f.fileno()).st_size))
                    continue
                block = np.ascontiguousarray(block).astype(block.dtype.newbyteorder("<"), copy=False)
                write_sparse(f, memoryview(block.reshape(-1)))
            length = f.tell() - offset
        _set(t, location=self.path, offset=str(offset), length=str(length))


def unload(model: onnx.ModelProto, min_bytes: int = 1024) -> onnx.ModelProto:
    """`model` with every initializer of `min_bytes` or more moved to a work file and bound there, so a
    large model held in memory (weights folded from constants, or stored inline) is read on demand
    from then on, like one loaded from external data. A new, compact proto: protobuf frees a
    message's bytes only with the whole message, so the caller drops `model` to free its weights."""
    work = None
    for t in model.graph.initializer:
        if not t.HasField("raw_data"):
            continue
        raw = t.raw_data  # protobuf hands out a new copy of the bytes at every access: take one
        if len(raw) < min_bytes:
            continue
        work = work or WorkFile(INLINE + "weights")
        with open(work.path, "r+b") as f:
            end = f.seek(0, os.SEEK_END)
            offset = end + (-end % 4096)
            f.seek(offset)
            write_sparse(f, memoryview(raw))
        length = len(raw)
        del raw
        t.ClearField("raw_data")  # the proto's copy goes as soon as the file has it
        _set(t, location=work.path, offset=str(offset), length=str(length))
    compact = onnx.ModelProto()
    compact.CopyFrom(model)
    return compact


@contextmanager
def scratch() -> Iterator[None]:
    """A scope whose models are all gone by its end (candidate plans tried by a search, prefixes run by
    sequential recovery): the work files made inside it are deleted at its end, so disk use does not
    grow with the number of candidates."""
    WorkFile._scratch.append([])
    try:
        yield
    finally:
        for path in WorkFile._scratch.pop():
            if os.path.exists(path):
                os.remove(path)
