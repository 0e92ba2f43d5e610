"""Where intermediate-feature distillation matches the student to the teacher.

Pruning a group narrows the tensors between its producers and its consumers; the consumers' outputs
keep their width, so the dense model's values of those tensors are targets the pruned model can
match directly. Found from the two models alone (no plan needed): the output of each Conv, Gemm or
MatMul with a weight whose shape changed, kept when both models give it the same shape, with the
batch on axis 0 (checked on two samples).
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxprune.load.runtime import session

FEATURE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def weight_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    return shapes


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the float tensors `names`."""
    out = copy.deepcopy(model)
    present = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                            for n in names if n not in present)
    return out


def feature_points(student: onnx.ModelProto, teacher: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                   threads: int = 0) -> list[str]:
    """Consumer outputs of the pruned groups, in graph order; `feeds` is a batch of two samples."""
    s_shapes, t_shapes = weight_shapes(student), weight_shapes(teacher)
    produced = {o for n in teacher.graph.node for o in n.output}
    outputs = {o.name for o in student.graph.output}
    found = []
    for node in student.graph.node:
        if node.op_type not in FEATURE_OPS or not node.output or node.output[0] in outputs:
            continue
        changed = any(i in s_shapes and i in t_shapes and s_shapes[i] != t_shapes[i] for i in node.input)
        if changed and node.output[0] in produced:
            found.append(node.output[0])
    if not found:
        return []
    batch = len(next(iter(feeds.values())))
    s_out = session(with_outputs(student, found), threads).run(found, dict(feeds))
    t_out = session(with_outputs(teacher, found), threads).run(found, dict(feeds))
    return [n for n, s, t in zip(found, s_out, t_out)
            if s.shape == t.shape and s.ndim >= 2 and s.shape[0] == batch and s.dtype == np.float32]


__all__ = ["feature_points", "with_outputs", "weight_shapes"]
