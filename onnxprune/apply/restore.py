"""Restore projections: the model's outputs keep their width when the residual stream shrinks.

An encoder's output is often the hidden state itself (MiniLM's last_hidden_state), and the model's
interface never changes. Before hidden-width pruning, each output whose last axis is the stream gets
`y = x @ I + 0` (an identity MatMul and a zero bias): the stream can then shrink inside, the rewrite
leaves the restore D' x D (a scatter of the kept channels, zeros elsewhere), and recovery re-solves it
by least squares like any linear layer (the removed channels predicted from the kept ones).
A restore the plan left whole is dropped again (`drop_identity_restores`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.couple.dependency import Dependency
from onnxprune.load.external import tensor_value
from onnxprune.couple.hidden import stream_groups
from onnxprune.couple.ops import Slot

PREFIX = "onnxprune_restore"


def stream_outputs(dep: Dependency) -> list[str]:
    """Graph outputs whose last axis belongs to a residual-stream group."""
    streams = {grp.id for grp in stream_groups(dep)}
    found = []
    for out in dep.graph.outputs:
        shape = dep.graph.shape(out)
        slot = Slot(out, len(shape) - 1) if shape else None
        if slot in dep.slot_index and int(dep.channel_group[dep.elements(slot)[0]]) in streams:
            found.append(out)
    return found


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def add_restores(model: onnx.ModelProto, dep: Dependency) -> onnx.ModelProto | None:
    """A copy of `model` with a restore projection before every float stream output (None if none)."""
    outputs = [o for o in stream_outputs(dep) if dep.graph.dtypes.get(o) == TensorProto.FLOAT]
    if not outputs:
        return None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for k, name in enumerate(outputs):
        width = dep.graph.shape(name)[-1]
        inner, weight, bias = f"{PREFIX}{k}/in", f"{PREFIX}{k}/weight", f"{PREFIX}{k}/bias"
        _rename(out, name, inner)
        out.graph.initializer.extend([numpy_helper.from_array(np.eye(width, dtype=np.float32), weight),
                                      numpy_helper.from_array(np.zeros(width, np.float32), bias)])
        out.graph.node.extend([helper.make_node("MatMul", [inner, weight], [f"{PREFIX}{k}/mm"], name=f"{PREFIX}{k}/MatMul"),
                               helper.make_node("Add", [f"{PREFIX}{k}/mm", bias], [name], name=f"{PREFIX}{k}/Add")])
    return out


def drop_identity_restores(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the restores the plan did not touch (still I and 0), in place; returns `model`."""
    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.name.startswith(PREFIX) and n.op_type == "MatMul"]:
        k = node.name[len(PREFIX):].split("/")[0]
        weight, bias = inits.get(f"{PREFIX}{k}/weight"), inits.get(f"{PREFIX}{k}/bias")
        add = next((n for n in model.graph.node if n.name == f"{PREFIX}{k}/Add"), None)
        if weight is None or bias is None or add is None:
            continue
        w, b = (tensor_value(t) for t in (weight, bias))  # maybe in a work file
        if w.shape[0] != w.shape[1] or not np.array_equal(w, np.eye(len(w), dtype=w.dtype)) or b.any():
            continue
        model.graph.node.remove(node)
        model.graph.node.remove(add)
        model.graph.initializer.remove(weight)
        model.graph.initializer.remove(bias)
        _rename(model, node.input[0], add.output[0])
    return model
