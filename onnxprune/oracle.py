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

from .dependency import Dependency


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
