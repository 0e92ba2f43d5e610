"""Weights by name, wherever the model keeps them: initializers or `Constant` nodes."""

from __future__ import annotations

import copy
from typing import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import BadInputError
from onnxprune.load.external import tensor_value
from onnxprune.load.tensors import all_graphs


def read_weights(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Copies of the named weights."""
    wanted = set(names)
    found = {i.name: tensor_value(i).copy() for i in model.graph.initializer if i.name in wanted}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in wanted:
            found[node.output[0]] = _constant_value(node)
    missing = wanted - set(found)
    if missing:
        raise BadInputError(f"weights not found in the model: {sorted(missing)}")
    return found


def write_weights(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with the named weights replaced (same name, shape and element type), in the
    main graph or in an If's or Loop's branch (a decided If trained through the branch it takes)."""
    out = copy.deepcopy(model)
    left = dict(values)
    for graph in all_graphs(out.graph):
        _write_graph(graph, left)
    if left:
        raise BadInputError(f"weights not found in the model: {sorted(left)}")
    return out


def _write_graph(graph: onnx.GraphProto, left: dict) -> None:
    for i, init in enumerate(graph.initializer):
        if init.name in left:
            new = np.asarray(left.pop(init.name))
            _same_shape(init.name, tuple(init.dims), new.shape)
            dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(new.astype(dtype), init.name))
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in left:
            name = node.output[0]
            new = np.asarray(left.pop(name))
            old = _constant_value(node)
            _same_shape(name, old.shape, new.shape)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(new.astype(old.dtype))))


def weights_as_inputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` whose named weights are graph inputs, so a session can read live buffers."""
    names = list(names)
    out = copy.deepcopy(model)
    shapes = {k: v for k, v in read_weights(model, names).items()}
    keep = [i for i in out.graph.initializer if i.name not in shapes]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    nodes = [n for n in out.graph.node if not (n.op_type == "Constant" and n.output and n.output[0] in shapes)]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    declared = {i.name for i in out.graph.input}
    for name in names:
        if name not in declared:
            value = shapes[name]
            out.graph.input.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    return out


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t).copy()
        if a.name == "value_float":
            return np.asarray(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.asarray(list(a.floats), dtype=np.float32)
    raise BadInputError(f"Constant node '{node.name or node.output[0]}' holds no float tensor")


def _same_shape(name: str, old: tuple, new: tuple) -> None:
    if tuple(old) != tuple(new):
        raise BadInputError(f"weight '{name}' has shape {tuple(old)} in the model, got {tuple(new)}")
