"""A model whose weights became NaN or infinite (a diverged fine-tune, a bad recovery solve) is never
written: the check names the first such tensor and fails like a gate (exit 1). Tensors that were
already non-finite in the input model (an attention mask of -inf) are left alone."""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import ValidationError


def _float_tensors(model: onnx.ModelProto):
    from onnxprune.load.tensors import all_tensors
    for t in all_tensors(model):
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                           onnx.TensorProto.BFLOAT16) and t.data_location != onnx.TensorProto.EXTERNAL:
            yield t


def _non_finite(t: onnx.TensorProto) -> int:
    try:
        arr = numpy_helper.to_array(t)
    except Exception:  # a tensor numpy cannot read is judged by the checker, not here
        return 0
    return int(arr.size - np.count_nonzero(np.isfinite(arr.astype(np.float32, copy=False))))


# small raw tensors of these types are checked in batches: numpy_helper.to_array per tensor cost 3 s
# on a 100,000-node graph of 60,000 small weights
_BATCHED = {onnx.TensorProto.FLOAT: "<f4", onnx.TensorProto.DOUBLE: "<f8", onnx.TensorProto.FLOAT16: "<f2"}
SMALL_ELEMENTS = 1 << 16
BATCH_BYTES = 16 << 20  # the bytes joined at once: the weights are never held twice


def _all_finite(model: onnx.ModelProto) -> bool:
    """True if every float tensor `_non_finite` would judge is finite (False at the first doubt)."""
    batches: dict[int, tuple[list[bytes], list[int]]] = {}

    def flush(data_type: int) -> bool:
        parts, _ = batches.pop(data_type)
        values = np.frombuffer(b"".join(parts), dtype=_BATCHED[data_type])
        with np.errstate(over="ignore"):  # a double beyond float32's range is infinite, as _non_finite judges
            return bool(np.isfinite(values.astype(np.float32, copy=False)).all())

    for t in _float_tensors(model):
        dtype = _BATCHED.get(t.data_type)
        count = math.prod(t.dims)
        if dtype is None or count > SMALL_ELEMENTS or not t.HasField("raw_data"):
            if _non_finite(t):
                return False
            continue
        raw = t.raw_data
        if len(raw) != count * np.dtype(dtype).itemsize:  # malformed: judged alone, as the checker would
            if _non_finite(t):
                return False
            continue
        parts, size = batches.setdefault(t.data_type, ([], [0]))
        parts.append(raw)
        size[0] += len(raw)
        if size[0] >= BATCH_BYTES and not flush(t.data_type):
            return False
    return all(flush(data_type) for data_type in list(batches))


def check_finite(model: onnx.ModelProto, reference: onnx.ModelProto | str | os.PathLike | None = None) -> None:
    """ValidationError naming the first tensor with NaN or infinite values that `reference` (the input
    model, or its path: read only when a non-finite tensor is found) lacks."""
    if _all_finite(model):
        return
    found = [(t.name, n) for t in _float_tensors(model) if (n := _non_finite(t))]
    if not found:
        return
    if isinstance(reference, (str, os.PathLike)):
        reference = onnx.load(str(reference), load_external_data=True)
    already = {t.name for t in _float_tensors(reference) if _non_finite(t)} if reference is not None else set()
    for name, bad in found:
        if name not in already:
            raise ValidationError(f"tensor '{name}' holds {bad} NaN or infinite value(s) (training diverged or a "
                                  "solve failed); the model is not written: lower --lr or change the options")
