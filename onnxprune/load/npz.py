"""Reading .npz files lazily: only the arrays asked for, only the rows asked for, and never more
than a size limit, so a small file declaring a huge array (or an unused huge array) costs nothing."""

from __future__ import annotations

import math
import os
import zipfile
from typing import Iterable

import numpy as np

from onnxprune.errors import BadInputError

MAX_ARRAY_BYTES = 2**31  # per array held in memory after --calib-limit; larger calibration sets are read in part
LAZY_BYTES = 64 << 20  # input arrays above this are read a batch at a time (load/rows.py), never whole


def read_arrays(path: str | os.PathLike, keys: Iterable[str], limit: int | None = None,
                lazy: bool = False) -> dict[str, np.ndarray]:
    """The arrays of `path` named in `keys` (absent keys are skipped), each cut to its first `limit`
    rows before it is decompressed. With `lazy`, a C-ordered array over LAZY_BYTES (labels aside) comes
    back as an NpzMember read on demand. BadInputError for a file that is not a readable .npz."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInputError(f"{path}: not a readable .npz file ({exc})") from None
    with zf:
        members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
        arrays = {}
        for key in keys:
            if key in members:
                arrays[key] = (_lazy_member(zf, members[key], path, key, limit) if lazy and key != "labels" else None)
                if arrays[key] is None:
                    arrays[key] = _read_member(zf, members[key], path, key, limit)
        arrays["__files__"] = sorted(members)  # type: ignore[assignment]  (for messages)
    return arrays


def _header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy stream `f`, left at the start of its data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def _lazy_member(zf: zipfile.ZipFile, member: str, path, key: str, limit: int | None):
    """An NpzMember for a large C-ordered numeric array, or None (then it is read whole)."""
    from onnxprune.load.rows import member_rows
    try:
        with zf.open(member) as f:
            shape, fortran, dtype = _header(f)
        if fortran or dtype.hasobject or not shape:
            return None
        rows = shape[0] if limit is None else min(shape[0], limit)
        if rows * math.prod(shape[1:]) * dtype.itemsize <= LAZY_BYTES:
            return None
        return member_rows(str(path), zf, member, key, limit, expand=False)
    except BadInputError:
        raise
    except Exception as exc:  # corrupt headers, unsupported compression
        raise BadInputError(f"{path}: array '{key}' is not readable ({exc})") from None


def _read_member(zf: zipfile.ZipFile, member: str, path, key: str, limit: int | None) -> np.ndarray:
    try:
        with zf.open(member) as f:
            shape, fortran, dtype = _header(f)
            if dtype.hasobject:
                raise BadInputError(f"{path}: array '{key}' holds Python objects; only numeric arrays are read")
            full = tuple(shape)
            if limit is not None and shape and not fortran:
                shape = (min(shape[0], limit),) + tuple(shape[1:])
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise BadInputError(f"{path}: array '{key}' {'x'.join(map(str, full))} ({nbytes / 2**30:.1f} GiB) is "
                                    f"over the {MAX_ARRAY_BYTES / 2**30:.0f} GiB limit; pass --calib-limit N "
                                    "to read fewer samples")
            if fortran:  # rare: read whole (within the limit), then cut
                arr = np.empty(full[::-1], dtype).T if full else np.empty((), dtype)
            else:
                arr = np.empty(shape, dtype)
            view = memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
            got = f.readinto(view) if arr.size else 0
            if got != arr.nbytes:
                raise BadInputError(f"{path}: array '{key}' is truncated ({got} of {arr.nbytes} bytes)")
            return arr[:limit] if fortran and limit is not None and arr.ndim else arr
    except BadInputError:
        raise
    except Exception as exc:  # corrupt headers, CRC errors, unsupported compression
        raise BadInputError(f"{path}: array '{key}' is not readable ({exc})") from None


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """A .npy file, its declared size checked before it is read."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise BadInputError(f"{path}: not a readable .npy file ({exc})") from None
    if mapped.nbytes > MAX_ARRAY_BYTES:
        raise BadInputError(f"{path}: {'x'.join(map(str, mapped.shape))} ({mapped.nbytes / 2**30:.1f} GiB) is over the "
                            f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB limit per array")
    return np.array(mapped)
