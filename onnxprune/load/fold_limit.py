"""A size limit for constant folding, checked from inferred shapes before anything is evaluated.

A 520-byte model can slice its weight from ConstantOfShape([1e9]): folded whole, that is 4 GB. The
folded tensors may total at most twice the model's stored weights, and never less than FLOOR (light
exports fill every weight with ConstantOfShape, so their stored weights are nearly nothing);
`--max-fold-mb` raises the limit.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from onnxprune.errors import BadInputError
from onnxprune.load.constants import constant_value, constant_values, foldable
from onnxprune.load.spill import raw_bytes
from onnxprune.load.tensors import all_tensors

FLOOR = 2**30
_SMALL = 1 << 16  # integer constants up to this many values are given to shape inference as values
_override_mb: float | None = None


def configure(max_fold_mb: float | None) -> None:
    """Set the limit for this process (the --max-fold-mb flag); None restores the default."""
    global _override_mb
    _override_mb = max_fold_mb


def stored_weight_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in all_tensors(model):
        if t.HasField("raw_data"):
            total += raw_bytes(t)  # from the shape: reading raw_data copies it
        elif t.data_location == onnx.TensorProto.EXTERNAL:  # a large model's weights, read from its file
            total += int(next((e.value for e in t.external_data if e.key == "length"), 0))
        else:
            total += 4 * max(len(t.float_data), len(t.int32_data), len(t.int64_data), len(t.double_data))
    return total


def limit_bytes(model: onnx.ModelProto) -> int:
    if _override_mb is not None:
        return int(_override_mb * 2**20)
    return max(2 * stored_weight_bytes(model), FLOOR)


def check_constant_subgraphs(model: onnx.ModelProto) -> None:
    """The fold-size check for a freshly loaded model, before anything (shape probes, ONNX Runtime)
    evaluates its constant subgraphs."""

    definitions = constant_values(model)
    constant = set(definitions)
    nodes = []
    for node in model.graph.node:
        if foldable(node, constant):
            nodes.append(node)
            constant.update(t for t in node.output if t)
    if not nodes:
        return
    produced = {t for n in nodes for t in n.output if t}
    needed = {t for n in nodes for t in n.input if t and t not in produced}
    check_fold_size(model, nodes, {t: _shape_only(definitions[t]) for t in sorted(needed)})


def _shape_only(defn) -> np.ndarray:
    """Small integer constants as values (shapes, axes: inference reads them); anything else as a
    zero-stride stand-in with the right shape and type, so no weight is copied for the check."""
    tensor = defn if isinstance(defn, onnx.TensorProto) else next(
        (a.t for a in defn.attribute if a.type == onnx.AttributeProto.TENSOR), None)
    if tensor is None:  # value_ints, value_float...: small by construction
        return constant_value(defn)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    if dtype.kind in "iu" and math.prod(tensor.dims) <= _SMALL:
        return onnx.numpy_helper.to_array(tensor)
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=tuple(tensor.dims),
                                           strides=(0,) * len(tensor.dims))


def check_fold_size(model: onnx.ModelProto, nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray]) -> None:
    """BadInputError if the outputs of the constant `nodes` (shapes inferred with the constants' values)
    would total more than the limit; names the node whose output crosses it."""
    limit = limit_bytes(model)
    small = {n: v for n, v in feeds.items() if v.dtype.kind in "iu" and v.size <= _SMALL}
    inits = [onnx.numpy_helper.from_array(np.ascontiguousarray(v), n) for n, v in small.items()]
    typed = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for n, v in feeds.items() if n not in small]  # the rest by type and shape only
    graph = onnx.helper.make_graph(nodes, "fold", typed, [], inits)
    sub = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=max(model.ir_version, 4))
    try:
        inferred = onnx.shape_inference.infer_shapes(sub)  # data_prop would build the values
    except Exception:  # inference can refuse odd subgraphs; evaluation then decides as before
        return
    types = {vi.name: vi.type.tensor_type for vi in inferred.graph.value_info if vi.type.HasField("tensor_type")}
    total = 0
    for node in nodes:
        for name in node.output:
            tensor = types.get(name)
            if tensor is None or not tensor.HasField("shape"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            if any(d is None for d in dims):
                continue
            try:
                itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize
            except Exception:
                itemsize = 8
            total += math.prod(dims) * itemsize
            if total > limit:
                from onnxprune.errors import one_line
                raise BadInputError(
                    f"constant folding: node '{one_line(node.name or name)}' ({node.op_type}) would make "
                    f"{'x'.join(map(str, dims))} values; the folded constants would exceed {limit / 2**20:.0f} MB "
                    "(twice the model's weights, at least 1 GiB); pass --max-fold-mb to raise the limit")
