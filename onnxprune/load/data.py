"""Input data: calibration/test feeds from .npz files, and synthetic feeds when none are given.

The .npz layout (DESIGN.md): an array keyed by an input name with the input's rank holds samples
along the batch axis (sample i is arr[i:i+1]); an array with one more dimension stacks samples
(sample i is arr[i]). An optional `labels` array holds one label per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import onnx

from onnxprune.errors import BadInputError
from onnxprune.load.rows import Rows

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
}


def input_ranks(model, given: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, int]:
    """Rank of every graph input that is fed (initializers listed as inputs by IR < 4 are not);
    `given` shapes (--input-shape) win over the declared ones."""
    constants, given = {i.name for i in model.graph.initializer}, dict(given or {})
    ranks = {}
    for inp in model.graph.input:
        if inp.name in given:
            ranks[inp.name] = len(given[inp.name])
        elif inp.name not in constants:
            if not inp.type.tensor_type.HasField("shape"):
                raise BadInputError(f"input '{inp.name}' has no shape; pass --input-shape {inp.name}:DxDx...")
            ranks[inp.name] = len(inp.type.tensor_type.shape.dim)
    return ranks


@dataclass
class Dataset:
    """Samples per input name and optional labels.

    `inputs[name][i]` is sample i exactly as it is fed to the model (batch axis included when the
    input has one), so a stack of N samples has shape (N, *input_shape).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    joinable: bool = True  # False: the model runs one sample at a time though it declares a batch axis


    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def spans(self, batch_size: int, batchable: bool = True) -> Iterator[tuple[int, int]]:
        """(start, stop) of each batch `batches` yields, without reading any sample."""
        scalar = any(v.ndim == 1 for v in self.inputs.values())  # rank-0 inputs (a sample rate) go one by one
        step = batch_size if batchable and self.joinable and not scalar else 1
        for start in range(0, len(self), step):
            yield start, min(start + step, len(self))

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples start..stop-1 joined on the batch axis (one sample as it is stored); only those rows
        are read from a lazy source (load/rows.py)."""
        if stop - start == 1:  # as stored (a rank-0 input cannot be joined)
            return {k: np.asarray(v[start]) for k, v in self.inputs.items()}
        return {k: np.concatenate(list(v[start:stop])) for k, v in self.inputs.items()}

    def batches(self, batch_size: int, batchable: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of up to `batch_size` samples joined on the batch axis (one at a time if not batchable)."""
        for start, stop in self.spans(batch_size, batchable):
            yield self.batch(start, stop)

    def batch_rows(self, start: int, stop: int) -> int:
        """Rows on the batch axis of batch start..stop-1 (samples may carry their own batch axis)."""
        first = next(iter(self.inputs.values()))
        return (stop - start) * (first.shape[1] if first.ndim > 1 else 1)

    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape[1:]) for k, v in self.inputs.items()}

    def take(self, n: int) -> "Dataset":
        return Dataset({k: v.head(n) if isinstance(v, Rows) else v[:n] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[:n], self.joinable)

    @property
    def lazy(self) -> bool:
        """Whether some input is read on demand (then never ask for it whole)."""
        return any(isinstance(v, Rows) for v in self.inputs.values())


def load_npz(path: str | os.PathLike, input_ranks: Mapping[str, int], limit: int | None = None) -> Dataset:
    """Read a calibration/test .npz keyed by input names (see the module docstring for the layout).
    Only the model's inputs and 'labels' are read, each cut to `limit` samples before decompression."""
    from onnxprune.load.npz import read_arrays

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder, expected a .npz file")
    arrays = read_arrays(path, [*input_ranks, "labels"], limit, lazy=True)
    held = arrays.pop("__files__")
    missing = [name for name in input_ranks if name not in arrays]
    if missing:
        raise BadInputError(f"{path}: no array for model input(s) {missing}; it holds {held}")
    inputs = {}
    for name, rank in input_ranks.items():
        arr = arrays[name]
        if arr.ndim == rank:  # samples along the batch axis: sample i is arr[i:i+1]
            arr = arr.expanded() if isinstance(arr, Rows) else arr[:, None]
        elif arr.ndim != rank + 1:
            raise BadInputError(f"{path}: array '{name}' has rank {arr.ndim}; input '{name}' has rank {rank} "
                                f"(give rank {rank} with samples on the batch axis, or {rank + 1} stacking samples)")
        inputs[name] = arr
    counts = {len(v) for v in inputs.values()}
    if len(counts) != 1:
        raise BadInputError(f"{path}: inputs hold different sample counts {sorted(counts)}")
    labels = arrays.get("labels")
    n = counts.pop()
    if labels is not None and len(labels) != n:
        raise BadInputError(f"{path}: 'labels' has {len(labels)} entries, the inputs hold {n} samples")
    return Dataset(inputs, labels)


def synthetic_feed(session, input_shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs for an ONNX Runtime session: normal floats, small non-negative ints."""
    rng = np.random.default_rng(seed)
    feed = {}
    for inp in session.get_inputs():
        shape = input_shapes[inp.name]
        from onnxprune.load.limits import check_elements
        check_elements(shape, f"synthetic input '{inp.name}'")  # a typo must not allocate terabytes
        dtype = _ORT_TO_NUMPY.get(inp.type, np.float32)
        if np.issubdtype(dtype, np.floating):
            feed[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feed[inp.name] = rng.integers(0, 2, shape).astype(dtype)
        elif "attention_mask" in inp.name:  # token masks are 0/1; fused attention sums them into lengths
            feed[inp.name] = np.ones(shape, dtype)
        else:  # small non-negative ints, below the size of any table the input indexes (token types)
            high = min(8, getattr(session, "index_limits", {}).get(inp.name, 8))
            feed[inp.name] = rng.integers(0, max(high, 1), shape).astype(dtype)
    return feed


# op -> (index input, table input, or the number of valid values): Gather looks up rows of its table;
# ONNX Runtime's EmbedLayerNormalization looks up words, segments and positions and reads a 0/1 mask
_LOOKUPS = {"Gather": ((1, 0),), "EmbedLayerNormalization": ((0, 2), (1, 4), (8, 3), (7, "2"))}


def _table_length(node, table: int | str, consts: dict[str, tuple[int, ...]]) -> int | None:
    if isinstance(table, str):
        return int(table)
    if table >= len(node.input) or node.input[table] not in consts:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return consts[node.input[table]][axis]


_NOT_INDICES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.BOOL}  # element types synthetic_feed never draws below a table length
_VALUE_PRESERVING = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}


def index_limits(model) -> dict[str, int]:
    """For integer graph inputs used as Gather indices into constant tables (embeddings, token types):
    the smallest table length, so synthetic inputs stay in range."""
    indexing = [inp for inp in model.graph.input if inp.type.tensor_type.elem_type not in _NOT_INDICES]
    if not indexing:  # only integer inputs are drawn below a limit (synthetic_feed): no graph walk for the rest
        return {}
    consts = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == 4:  # TENSOR
            consts[node.output[0]] = tuple(node.attribute[0].t.dims)
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for t in node.input:
            consumers.setdefault(t, []).append(node)
    limits = {}
    for inp in indexing:
        frontier, seen, limit = [inp.name], set(), None
        while frontier:
            t = frontier.pop()
            if t in seen:
                continue
            seen.add(t)
            for node in consumers.get(t, []):
                if node.op_type in _VALUE_PRESERVING and node.input[0] == t:
                    frontier.extend(node.output)
                for index, table in _LOOKUPS.get(node.op_type, ()):
                    if index < len(node.input) and node.input[index] == t:
                        length = _table_length(node, table, consts)
                        limit = limit if length is None else length if limit is None else min(limit, length)
        if limit is not None:
            limits[inp.name] = int(limit)
    return limits


def synthetic_dataset(session, input_shapes: Mapping[str, tuple[int, ...]], samples: int = 8, seed: int = 0) -> Dataset:
    """`samples` synthetic samples, each shaped like the input."""
    feeds = [synthetic_feed(session, input_shapes, seed + i) for i in range(samples)]
    return Dataset({k: np.stack([f[k] for f in feeds]) for k in feeds[0]})
