"""Samples read on demand: a stack of calibration samples that is never held whole.

256 images of 3x640x640 are 1.26 GB as float32; a statistics pass needs one batch of them at a time.
A `Rows` looks like the stacked array to `Dataset` (len, shape, ndim, dtype, indexing by an int, a
slice or an index array, each returning a numpy array of just those rows) and reads only the rows asked
for: an uncompressed .npz member with positioned file reads (no memory map, so the page cache does not
count toward the RSS), a compressed one by streaming its deflate data forward (a pass over the samples
in order decompresses each byte once; going back restarts the stream). `head` and `pick` are lazy views.
"""

from __future__ import annotations

import math
import os
import struct
import weakref
import zipfile
import zlib

import numpy as np

from onnxprune.errors import BadInputError

READ_ROWS_BYTES = 64 << 20  # rows read in one file call: bounded whatever the batch


class Rows:
    """A lazily read stack of samples: `shape[0]` samples of `shape[1:]` each."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self, idx: np.ndarray) -> np.ndarray:  # the rows `idx` (in that order) as one array
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the rest of the index on what was read
            rows = self[key[0]]
            return rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"sample {key} of {len(self)}")
            return self.read(np.array([index]))[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self))[key])
        idx = np.asarray(key)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        return self.read(idx.astype(np.int64).reshape(-1))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # whole: only for small sets or old callers
        arr = self.read(np.arange(len(self)))
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def head(self, n: int) -> "Rows":
        return Picked(self, np.arange(min(n, len(self))))

    def pick(self, idx: np.ndarray) -> "Rows":
        return Picked(self, np.asarray(idx, np.int64))

    def blocks(self, max_bytes: int = READ_ROWS_BYTES):
        """The samples in order, a few at a time (for checks that must see every value)."""
        per = max(1, max_bytes // max(1, self.nbytes // max(len(self), 1)))
        for start in range(0, len(self), per):
            yield self.read(np.arange(start, min(start + per, len(self))))


class Picked(Rows):
    """Rows `idx` of another Rows, still read on demand."""

    def __init__(self, base: Rows, idx: np.ndarray):
        self.base, self.idx = base, idx
        self.shape, self.dtype = (len(idx),) + tuple(base.shape[1:]), base.dtype

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.base.read(self.idx[idx])


def _runs(idx: np.ndarray) -> list[tuple[int, int, int]]:
    """(position in idx, first row, count) for each run of consecutive rows in `idx`."""
    runs, i = [], 0
    while i < len(idx):
        j = i + 1
        while j < len(idx) and idx[j] == idx[j - 1] + 1:
            j += 1
        runs.append((i, int(idx[i]), j - i))
        i = j
    return runs


class NpzMember(Rows):
    """Rows of one C-ordered array inside a .npz (stored or deflated). `expand` inserts the batch axis
    of a sample (an array of the input's rank holds samples along its batch axis: sample i is arr[i:i+1])."""

    def __init__(self, path: str, member: zipfile.ZipInfo, key: str, shape: tuple[int, ...], dtype: np.dtype,
                 data_start: int, expand: bool = False):
        self.path, self.member, self.key, self.expand = str(path), member, key, expand
        self.stored_shape, self.dtype, self.data_start = tuple(shape), np.dtype(dtype), data_start
        self.shape = (shape[0], 1) + tuple(shape[1:]) if expand else tuple(shape)
        self.row_bytes = math.prod(shape[1:]) * self.dtype.itemsize
        self._zip = self._stream = None
        self._offset = 0  # of a stored member's data in the file
        if member.compress_type == zipfile.ZIP_STORED:
            self._offset = _stored_offset(self.path, member) + data_start
        weakref.finalize(self, _close, self.__dict__)

    def expanded(self) -> "NpzMember":
        """The same rows with the batch axis of each sample inserted (see the class doc)."""
        return NpzMember(self.path, self.member, self.key, self.stored_shape, self.dtype, self.data_start, True)

    def _fail(self, why: str) -> BadInputError:
        return BadInputError(f"{self.path}: array '{self.key}' {why}")

    def read(self, idx: np.ndarray) -> np.ndarray:
        if len(idx) and (idx.min() < 0 or idx.max() >= self.stored_shape[0]):
            raise IndexError(f"rows {idx.min()}..{idx.max()} of {self.stored_shape[0]}")
        out = np.empty((len(idx),) + self.stored_shape[1:], self.dtype)
        flat = out.reshape(len(idx), -1).view(np.uint8)
        for at, first, count in _runs(idx):
            for k in range(0, count, max(1, READ_ROWS_BYTES // max(self.row_bytes, 1))):
                n = min(count - k, max(1, READ_ROWS_BYTES // max(self.row_bytes, 1)))
                self._read_into(first + k, memoryview(flat[at + k:at + k + n].reshape(-1)))
        return out[:, None] if self.expand else out

    def _read_into(self, row: int, view: memoryview) -> None:
        try:
            if self.member.compress_type == zipfile.ZIP_STORED:
                with open(self.path, "rb") as f:
                    f.seek(self._offset + row * self.row_bytes)
                    got = f.readinto(view)
            else:
                got = self._inflate(self.data_start + row * self.row_bytes, view)
        except BadInputError:
            raise
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, ValueError) as exc:
            raise self._fail(f"is not readable ({exc})") from None
        if got != len(view):
            raise self._fail(f"is truncated (row {row}: {got} of {len(view)} bytes)")

    def _inflate(self, position: int, view: memoryview) -> int:
        """Read a deflated member forward from `position` (a restart if it lies behind the stream)."""
        if self._stream is None or self._stream.tell() > position:
            _close(self.__dict__)
            self._zip = zipfile.ZipFile(self.path)
            self._stream = self._zip.open(self.member)
        skip = position - self._stream.tell()
        while skip > 0:  # decompress and drop, a bounded piece at a time
            piece = self._stream.read(min(skip, READ_ROWS_BYTES))
            if not piece:
                return 0
            skip -= len(piece)
        got = 0
        while got < len(view):
            n = self._stream.readinto(view[got:])
            if not n:
                break
            got += n
        return got


def _close(state: dict) -> None:
    for name in ("_stream", "_zip"):
        handle = state.get(name)
        if handle is not None:
            handle.close()
        state[name] = None


def _stored_offset(path: str, member: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin: after its local header, whose name and extra field lengths
    can differ from the central directory's."""
    with open(path, "rb") as f:
        f.seek(member.header_offset)
        header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise BadInputError(f"{path}: member '{member.filename}' has no valid local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return member.header_offset + 30 + name_len + extra_len


def member_rows(path: str, zf: zipfile.ZipFile, name: str, key: str, limit: int | None,
                expand: bool) -> NpzMember:
    """A lazy NpzMember for `name` (a C-ordered numeric array), its size checked against the file's:
    a member that cannot hold the rows it declares is reported now, not in the middle of a run."""
    info = zf.getinfo(name)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        start = f.tell()
    rows = shape[0] if limit is None else min(shape[0], limit)
    need = start + rows * math.prod(shape[1:]) * dtype.itemsize
    if info.file_size < need:
        raise BadInputError(f"{path}: array '{key}' is truncated ({max(info.file_size - start, 0)} of "
                            f"{need - start} bytes)")
    out = NpzMember(path, info, key, (rows,) + tuple(shape[1:]), dtype, start, expand)
    if info.compress_type == zipfile.ZIP_STORED and os.path.getsize(path) < out._offset + need - start:
        raise BadInputError(f"{path}: array '{key}' is truncated (the file ends before its data)")
    return out
