"""Does the data fit the model? Element types and fixed dimensions of every input, checked before
any work, so bad data is reported as bad data (exit 2) and never blamed on the pruned model."""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.load.data import Dataset
from onnxprune.load.rows import Rows
from onnxprune.errors import BadInputError


def check_fits(model: onnx.ModelProto, data: Dataset, source: object, labels: bool = False,
               shapes: dict | None = None) -> None:
    """BadInputError naming the input, the data's type or shape and what the model takes; with
    `labels`, also labels that are not class indices of the model's first output; with `shapes`
    (--input-shape), also samples whose non-batch dimensions differ from them."""
    if labels and data.labels is not None:
        check_labels(model, data.labels, source)
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers or inp.name not in data.inputs or not inp.type.HasField("tensor_type"):
            continue
        tensor = inp.type.tensor_type
        arr = data.inputs[inp.name]
        try:
            wanted = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            wanted = None
        if wanted is not None and arr.dtype != wanted:
            raise BadInputError(f"{source}: '{inp.name}' holds {arr.dtype} values; the model's input '{inp.name}' "
                                f"takes {wanted} (convert the data, e.g. arr.astype(np.{wanted}))")
        if np.issubdtype(arr.dtype, np.floating) and not _finite(arr):
            raise BadInputError(f"{source}: '{inp.name}' holds NaN or infinite values; every statistic and "
                                "gradient computed from them would be NaN")
        if not tensor.HasField("shape"):
            continue
        sample = arr.shape[1:]
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
        declared = "x".join(str(d) if d else "?" for d in dims)
        if len(sample) != len(dims):
            continue  # rank mismatches are reported by the loader with the layout rules
        for axis, (want, got) in enumerate(zip(dims, sample)):
            if want is not None and want != got:
                hint = (f"; images have {got} channels here, the model takes {want}"
                        if axis in (1, len(dims) - 1) and len(dims) == 4 and {got, want} <= {1, 3, 4} else "")
                raise BadInputError(f"{source}: samples of '{inp.name}' are {'x'.join(map(str, sample))}, the model's "
                                    f"input takes {declared} (axis {axis}: {got}, not {want}){hint}")
        _check_given_shape(inp.name, sample, (shapes or {}).get(inp.name), source)


def _check_given_shape(name: str, sample: tuple, given, source: object) -> None:
    """The analysis runs at --input-shape; samples of another size along a dynamic axis would reach
    tensors the analysis never sized (a crash deep in the statistics pass), so they are bad input.
    The batch axis may differ: samples are joined along it."""
    if given is None or len(given) != len(sample):
        return
    for axis, (want, got) in enumerate(zip(given, sample)):
        if axis > 0 and want != got:
            have, told = "x".join(map(str, sample)), "x".join(map(str, given))
            raise BadInputError(f"{source}: samples of '{name}' are {have}, --input-shape gives {name}:{told} "
                                f"(axis {axis}: {got}, not {want}); make them agree")


def _finite(arr) -> bool:
    """Every value finite; a lazily read stack (load/rows.py) is read a block at a time (which also finds
    a corrupt or truncated file before any work)."""
    blocks = arr.blocks() if isinstance(arr, Rows) else [arr]
    return all(np.isfinite(block).all() for block in blocks)


def check_labels(model: onnx.ModelProto, labels: np.ndarray, source: object) -> None:
    """Labels for training on cross-entropy are integer class indices below the first output's width."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise BadInputError(f"{source}: 'labels' holds {labels.dtype} values; class indices are integers")
    if labels.size and labels.min() < 0:
        raise BadInputError(f"{source}: 'labels' holds {int(labels.min())}; class indices start at 0")
    out = model.graph.output[0].type.tensor_type if model.graph.output else None
    dims = list(out.shape.dim) if out is not None and out.HasField("shape") else []
    if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value > 0 and labels.size \
            and labels.max() >= dims[1].dim_value:
        raise BadInputError(f"{source}: 'labels' holds {int(labels.max())}; the model's output "
                            f"'{model.graph.output[0].name}' has {dims[1].dim_value} classes")


PROBE_BYTES = 256 << 20  # above this a model is taken to batch as it declares: a second session costs too much


def joins(model: onnx.ModelProto, data: Dataset) -> bool:
    """Whether the model runs two samples joined on its declared batch axis. An export can declare a
    dynamic batch and still bake batch 1 into a Reshape (a PyTorch `view(seq, 1, 3, 192)`); such a model
    must be fed one sample at a time. False only when one sample runs and two joined do not."""
    from onnxprune.load.runtime import batchable, session

    if len(data) < 2 or any(v.ndim < 2 for v in data.inputs.values()):
        return True
    sess = session(model, optimize=False, arena=False)
    if not batchable(sess):
        return True  # fed one at a time already
    try:
        sess.run(None, data.batch(0, 2))
        return True
    except Exception:  # noqa: BLE001  (ONNX Runtime's errors have no common type)
        try:
            sess.run(None, data.batch(0, 1))
        except Exception:  # noqa: BLE001  (a model that fails on one sample: later steps report it)
            return True
        return False
