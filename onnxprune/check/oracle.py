"""The zero-channel oracle: a label-free check that a plan's rewrite is exact.

Zero the plan's removed channels in every floating-point constant that carries them (producing
filters, biases, BN parameters and the consumers' input slices alike). Those channels then
contribute exactly nothing, so the zeroed dense model and the pruned model must agree to float
rounding on any input, random weights included.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.couple.dependency import Dependency
from onnxprune.graph.model_graph import ModelGraph


def zero_removed(dep: Dependency, removed: np.ndarray) -> onnx.ModelProto:
    """A copy of the dense model with the removed channels zeroed in every constant."""
    g = dep.graph
    zeroed: dict[str, np.ndarray] = {}
    for slot in dep.slots:
        value = zeroed.get(slot.tensor, g.constants.get(slot.tensor))
        if value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        gone = np.flatnonzero(removed[dep.elements(slot)])
        if len(gone):
            value = value.copy()
            index = [slice(None)] * value.ndim
            index[slot.axis] = gone
            value[tuple(index)] = 0
            zeroed[slot.tensor] = value
    model = onnx.ModelProto()
    model.CopyFrom(g.model)
    for init in model.graph.initializer:
        if init.name in zeroed:
            init.CopyFrom(numpy_helper.from_array(zeroed[init.name], init.name))
    for name, index in g.constant_node.items():
        if name in zeroed:
            for attr in model.graph.node[index].attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(zeroed[name], name))
    return model


def randomize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Seeded random float weights at a fan-in scale, 1-D parameters around 1 (positive BN variances):
    zoo graphs whose weights are constant fills would make the oracle prove nothing."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type != onnx.TensorProto.FLOAT or len(t.dims) == 0:
            continue
        shape = tuple(t.dims)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else min(shape)
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        else:
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        t.CopyFrom(numpy_helper.from_array(value, t.name))
    return out


def expose_logits(model: onnx.ModelProto, g: ModelGraph, depth: int = 3) -> onnx.ModelProto:
    """`model` with the tensors that lead to each output with the output's shape (a final Softmax's
    logits, up to `depth` nodes back) as extra outputs, so a saturated softmax hides nothing."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    declared = {o.name for o in model.graph.output}
    frontier = [(o.name, g.shape(o.name)) for o in model.graph.output]
    for _ in range(depth):
        step = []
        for name, shape in frontier:
            producer = g.producer.get(name)
            for t in g.nodes[producer].inputs if producer is not None else []:
                if t and t not in declared and not g.is_const(t) and g.shape(t) == shape:
                    out.graph.output.add().name = t
                    declared.add(t)
                    step.append((t, shape))
        frontier = step
    return out
