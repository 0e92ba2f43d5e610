"""Weights quantized at run time (a float constant -> QuantizeLinear -> DequantizeLinear), as ONNX Runtime's
quantizer leaves a weight that is a Constant node (paddle2onnx exports): the QuantizeLinear is computed
here, so the weight becomes the usual integer initializer behind a DequantizeLinear, which
load/qdq_lift.py lifts. The model computes the same (ONNX Runtime folds that QuantizeLinear itself when
it builds a session); the pruned model stores the integers.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_FLOAT = (np.float32, np.float16, np.float64)


def runtime_weights(model: onnx.ModelProto) -> list[int]:
    """Indices of the QuantizeLinear nodes that quantize a constant with constant parameters and feed
    only DequantizeLinears."""
    values = _Constants(model)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for t in node.input:
            readers.setdefault(t, set()).add(node.op_type)
    outputs = {o.name for o in model.graph.output}
    found = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
            continue
        x, s, z = node.input[:3]
        if not all(values.has(t) for t in (x, s, z)) or any(a.name in ("block_size", "output_dtype") for a in node.attribute):
            continue
        if node.output[0] in outputs or readers.get(node.output[0]) != {"DequantizeLinear"}:
            continue
        scale, zero = values.get(s), values.get(z)
        if scale.size != 1 or zero.size != 1 or not np.isfinite(scale).all() or scale.item() <= 0:
            continue  # per-tensor only: a run-time weight gets one scale from calibration
        if values.get(x).dtype in _FLOAT:
            found.append(i)
    return found


def fold_runtime_weights(model: onnx.ModelProto, indices: list[int]) -> None:
    """Replace each listed QuantizeLinear (in place) by the integer initializer it computes; the Constant
    nodes only they read go too."""
    values = _Constants(model)
    sources = set()
    for i in sorted(indices, reverse=True):
        node = model.graph.node[i]
        x, s, z = node.input[:3]
        zero = values.get(z)
        q = np.rint(values.get(x).astype(np.float32) / values.get(s).astype(np.float32).reshape(()))  # as ORT: half to even
        info = np.iinfo(zero.dtype)
        q = np.clip(q + zero.astype(np.float64).reshape(()), info.min, info.max).astype(zero.dtype)
        model.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        sources.add(x)
        del model.graph.node[i]
    read = {t for node in model.graph.node for t in node.input} | {o.name for o in model.graph.output}
    for i in reversed(range(len(model.graph.node))):
        node = model.graph.node[i]
        if node.op_type == "Constant" and node.output[0] in sources and node.output[0] not in read:
            del model.graph.node[i]


class _Constants:
    """Initializers and Constant node values by name, read on demand."""

    def __init__(self, model: onnx.ModelProto):
        self.tensors = {t.name: t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
        for node in model.graph.node:
            if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
                self.tensors[node.output[0]] = node.attribute[0].t

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.tensors[name])
