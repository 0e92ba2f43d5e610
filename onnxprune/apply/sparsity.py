"""Unstructured and N:M sparsity: masks on the weights of linear ops, zeros in the saved model.

Masks keep the largest |w|. Local scope gives every weight the same sparsity; global scope ranks
all weights of a kind together (|w| divided by the layer's RMS so layers are comparable). N:M keeps
the N largest of every M consecutive weights along the input-channel axis (2:4 is what sparse tensor
cores run). Masks are kept through fine-tuning by the trainer; this module makes and applies them.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.external import inlined, tensor_value

# op -> (weight input index, input-channel axis of the weight); what counts as "conv" or "linear"
WEIGHTED_OPS = {"Conv": (1, 1, "conv"), "ConvTranspose": (1, 0, "conv"), "Gemm": (1, None, "linear"),
                "MatMul": (1, 0, "linear")}


@dataclass
class SparseWeight:
    name: str
    kind: str          # "conv" or "linear"
    in_axis: int       # the axis N:M groups run along


def sparse_weights(g: ModelGraph) -> list[SparseWeight]:
    """Float constant weights (rank >= 2) of Conv, ConvTranspose, Gemm and MatMul."""
    found: dict[str, SparseWeight] = {}
    for node in g.nodes:
        spec = WEIGHTED_OPS.get(node.op)
        if spec is None or len(node.inputs) <= spec[0]:
            continue
        name = node.inputs[spec[0]]
        value = g.const(name)
        if value is None or value.ndim < 2 or not np.issubdtype(value.dtype, np.floating):
            continue
        axis = spec[1]
        if node.op == "Gemm":
            axis = 1 if int(node.attrs.get("transB", 0)) else 0
        found.setdefault(name, SparseWeight(name, spec[2], axis))
    return list(found.values())


def magnitude_masks(g: ModelGraph, sparsity: float | dict[str, float], scope: str = "local",
                    pattern: str = "unstructured", weights: list[SparseWeight] | None = None) -> dict[str, np.ndarray]:
    """Boolean keep-masks per weight name. `sparsity` may differ per kind: {"conv": 0.5, "linear": 0.8}."""
    weights = sparse_weights(g) if weights is None else weights
    per_kind = sparsity if isinstance(sparsity, dict) else {"conv": sparsity, "linear": sparsity}
    for kind, s in per_kind.items():
        if not 0.0 <= s < 1.0:
            raise BadInputError(f"sparsity for {kind} layers must be in [0, 1), got {s}")
    if pattern != "unstructured":
        n, m = _parse_nm(pattern)
        return {w.name: nm_mask(g.const(w.name), n, m, w.in_axis) for w in weights}
    if scope == "local":
        return {w.name: _keep_largest(np.abs(g.const(w.name)), per_kind.get(w.kind, 0.0)) for w in weights}
    if scope != "global":
        raise BadInputError(f"scope must be 'local' or 'global', got '{scope}'")
    masks = {}
    for kind in {w.kind for w in weights}:
        members = [w for w in weights if w.kind == kind]
        scaled = [np.abs(g.const(w.name)) / (np.sqrt(np.mean(g.const(w.name) ** 2)) + 1e-12) for w in members]
        flat = np.concatenate([s.reshape(-1) for s in scaled])
        k = int(round(per_kind.get(kind, 0.0) * flat.size))
        threshold = np.partition(flat, k - 1)[k - 1] if k > 0 else -np.inf
        for w, s in zip(members, scaled):
            masks[w.name] = s > threshold
    return masks


def _keep_largest(magnitude: np.ndarray, sparsity: float) -> np.ndarray:
    k = int(round(sparsity * magnitude.size))
    mask = np.ones(magnitude.shape, dtype=bool)
    if k > 0:
        order = np.argsort(magnitude.reshape(-1), kind="stable")
        mask.reshape(-1)[order[:k]] = False
    return mask


def _parse_nm(pattern: str) -> tuple[int, int]:
    try:
        n, m = (int(v) for v in pattern.split(":"))
        assert 0 < n < m
    except (ValueError, AssertionError):
        raise BadInputError(f"pattern must be 'unstructured' or N:M with 0 < N < M (e.g. 2:4), got '{pattern}'") from None
    return n, m


def check_pattern(pattern: str) -> None:
    """Refuse a pattern that is neither 'unstructured' nor N:M (BadInputError), before any work."""
    if pattern != "unstructured":
        _parse_nm(pattern)


def nm_mask(value: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    """Keep the n largest |w| of every m consecutive weights along `axis` (a tail shorter than m keeps
    the same proportion, rounded up)."""
    moved = np.moveaxis(np.abs(value), axis, -1)
    length = moved.shape[-1]
    mask = np.zeros(moved.shape, dtype=bool)
    for start in range(0, length, m):
        block = moved[..., start:start + m]
        keep = n if block.shape[-1] == m else max(1, int(np.ceil(n * block.shape[-1] / m)))
        top = np.argsort(-block, axis=-1, kind="stable")[..., :keep]
        np.put_along_axis(mask[..., start:start + m], top, True, axis=-1)
    return np.moveaxis(mask, -1, axis)


def apply_masks(model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with masked weights set to zero (initializers and Constant nodes alike)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in masks:
            value = tensor_value(init)  # a large model's weights may be bound to its data file (load/external.py)
            init.CopyFrom(numpy_helper.from_array(np.where(masks[init.name], value, 0).astype(value.dtype), init.name))
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in masks:
            for attr in node.attribute:
                if attr.name == "value":
                    value = numpy_helper.to_array(attr.t)
                    attr.t.CopyFrom(numpy_helper.from_array(np.where(masks[node.output[0]], value, 0).astype(value.dtype),
                                                            node.output[0]))
    return out


def to_sparse_initializers(model: onnx.ModelProto, min_sparsity: float = 0.5) -> onnx.ModelProto:
    """Store initializers that are at least `min_sparsity` zeros as ONNX sparse initializers (COO)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for init in out.graph.initializer:
        value = tensor_value(init)
        if value.ndim >= 2 and np.issubdtype(value.dtype, np.floating) and (value == 0).mean() >= min_sparsity:
            flat = value.reshape(-1)
            idx = np.flatnonzero(flat)
            sparse = onnx.SparseTensorProto()
            sparse.dims.extend(value.shape)
            sparse.values.CopyFrom(numpy_helper.from_array(flat[idx], init.name))
            sparse.indices.CopyFrom(numpy_helper.from_array(idx.astype(np.int64), init.name + "_indices"))
            out.graph.sparse_initializer.append(sparse)
        else:
            keep.append(init)
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out


def sparsity_report(model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> dict:
    """Achieved sparsity per weight and overall, raw and zip-compressed model sizes."""
    per_weight = {name: float(1.0 - mask.mean()) for name, mask in masks.items()}
    total = sum(m.size for m in masks.values())
    zeros = sum(int((~m).sum()) for m in masks.values())
    with inlined(model):  # weights bound to a data file count as the bytes they are
        raw = model.SerializeToString()
    return {"weights": per_weight, "sparsity": zeros / total if total else 0.0, "size_bytes": len(raw),
            "zip_bytes": zipped_size(raw)}


def zipped_size(data: bytes) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("model.onnx", data)
    return len(buffer.getvalue())
