"""The zero-channel oracle for hidden-width plans: norms take their statistics over the kept channels.

Removing residual-stream channels changes every norm's mean and variance (they are computed over
fewer channels), so the plain oracle (check/oracle.py: zero the removed channels, compare) cannot hold
there. Its exact counterpart: zero the removed channels as before, and make each norm on the stream
compute its statistics over the kept channels only (a masked sum divided by the kept count). That
model and the pruned model must agree to float rounding on any input.

Masked here: LayerNormalization, SimplifiedLayerNormalization (RMSNorm) and ReduceMean over the last
axis (the decomposed forms exporters write). The fused com.microsoft norms are not decomposed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.check.oracle import zero_removed
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.ops import Slot


class _Emitter:
    """Builds the masked replacement of one node: fresh names, constants as initializers."""

    def __init__(self, model: onnx.ModelProto, prefix: str):
        self.model, self.prefix, self.nodes, self.count = model, prefix, [], 0

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}/m{self.count}"

    def const(self, value) -> str:
        name = self.name()
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name()
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def masked_mean(self, x: str, mask: str, count: str) -> str:
        summed = self.op("ReduceSum", [self.op("Mul", [x, mask]), self.const(np.array([-1]))], keepdims=1)
        return self.op("Div", [summed, count])


def _mask(dep: Dependency, removed: np.ndarray, tensor: str) -> np.ndarray | None:
    shape = dep.graph.shape(tensor)
    slot = Slot(tensor, len(shape) - 1) if shape else None
    if slot is None or slot not in dep.slot_index:
        return None
    gone = removed[dep.elements(slot)]
    return (~gone).astype(np.float32) if gone.any() else None


def _attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _reduces_last_axis(g, node: onnx.NodeProto) -> bool:
    """A ReduceMean over exactly the last axis, keeping it (as a decomposed norm averages)."""
    axes = _attr(node, "axes", None)
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = g.const(node.input[1])
    r = len(g.shape(node.input[0]) or ())
    return axes is not None and {int(a) % r for a in np.asarray(axes).reshape(-1)} == {r - 1} and \
        bool(_attr(node, "keepdims", 1))


def _masked(node: onnx.NodeProto, e: _Emitter, mask: np.ndarray, g) -> bool:
    """Emit the masked form of `node` into `e`; False when the node is not a norm on the stream."""
    standard = node.domain in ("", "ai.onnx")
    reduce = standard and node.op_type == "ReduceMean" and _reduces_last_axis(g, node)
    norm = standard and node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization") and \
        not any(node.output[1:])  # the optional mean / inv_std_var outputs are not rebuilt
    if not (reduce or norm):
        return False
    m, k = e.const(mask), e.const(np.float32(mask.sum()))
    x, y = node.input[0], node.output[0]
    if reduce:
        e.masked_mean(x, m, k)
        e.nodes[-1].output[0] = y
        return True
    eps = e.const(np.float32(_attr(node, "epsilon", 1e-5)))
    centred = x
    if node.op_type == "LayerNormalization":
        centred = e.op("Mul", [e.op("Sub", [x, e.masked_mean(x, m, k)]), m])
    var = e.masked_mean(e.op("Mul", [centred, centred]), m, k)
    scaled = e.op("Mul", [e.op("Div", [centred, e.op("Sqrt", [e.op("Add", [var, eps])])]), node.input[1]])
    if len(node.input) > 2 and node.input[2]:
        e.op("Add", [scaled, node.input[2]], out=y)
    else:
        e.op("Identity", [scaled], out=y)
    return True


def masked_reference(dep: Dependency, removed: np.ndarray) -> onnx.ModelProto:
    """The dense model with the removed channels zeroed and every stream norm's statistics masked
    to the kept channels: what a hidden-width plan's pruned model must compute exactly."""
    model = zero_removed(dep, removed)
    nodes = []
    for i, node in enumerate(list(model.graph.node)):
        mask = _mask(dep, removed, node.input[0]) if node.input else None
        e = _Emitter(model, f"oracle{i}")
        if mask is not None and _masked(node, e, mask, dep.graph):
            nodes.extend(e.nodes)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
