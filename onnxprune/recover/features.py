"""Where intermediate-feature distillation matches the student to the teacher.

Pruning a group narrows the tensors between its producers and its consumers; the consumers' outputs
keep their width, so the dense model's values of those tensors are targets the pruned model can
match directly. Found from the two models alone (no plan needed): the output of each Conv, Gemm or
MatMul with a weight whose shape changed, kept when both models give it the same shape, with the
batch on axis 0 (checked on two samples).

The pruned layers' own outputs are narrower in the student, but each kept channel is one of the dense
model's: `sliced_points` finds which, by matching each student channel to the teacher channel it
correlates with best on the given samples. A tensor is kept only when those matches are distinct, in
the dense order (pruning keeps the channel order) and close (correlation at least MATCH_MIN); its target
is then the teacher's tensor at those indices (recover/targets.py slices it per batch).
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxprune.load.runtime import session

FEATURE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
MATCH_MIN = 0.5  # a kept channel's correlation with the dense channel it is matched to (the order check is the strict one)


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


def _candidates(student: onnx.ModelProto, teacher: onnx.ModelProto) -> list[str]:
    """Outputs of Conv/Gemm/MatMul nodes with a weight whose shape changed, present in both models."""
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
    return found


def feature_points(student: onnx.ModelProto, teacher: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                   threads: int = 0) -> list[str]:
    """Consumer outputs of the pruned groups, in graph order; `feeds` is a batch of two samples."""
    found = _candidates(student, teacher)
    if not found:
        return []
    batch = len(next(iter(feeds.values())))
    s_out = session(with_outputs(student, found), threads).run(found, dict(feeds))
    t_out = session(with_outputs(teacher, found), threads).run(found, dict(feeds))
    return [n for n, s, t in zip(found, s_out, t_out)
            if s.shape == t.shape and s.ndim >= 2 and s.shape[0] == batch and s.dtype == np.float32]


def sliced_points(student: onnx.ModelProto, teacher: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                  threads: int = 0) -> dict[str, tuple[int, np.ndarray]]:
    """Pruned layers' outputs -> (channel axis, the teacher's indices of the student's channels), in graph
    order; `feeds` is a batch of a few samples (batch on axis 0 in both models)."""
    found = _candidates(student, teacher)
    if not found:
        return {}
    batch = len(next(iter(feeds.values())))
    s_out = session(with_outputs(student, found), threads).run(found, dict(feeds))
    t_out = session(with_outputs(teacher, found), threads).run(found, dict(feeds))
    points = {}
    for name, s, t in zip(found, s_out, t_out):
        if s.ndim != t.ndim or s.ndim < 2 or s.shape[0] != batch or t.shape[0] != batch or s.dtype != np.float32:
            continue
        narrower = [a for a in range(1, s.ndim) if s.shape[a] != t.shape[a]]
        if len(narrower) != 1 or s.shape[narrower[0]] >= t.shape[narrower[0]]:
            continue
        kept = match_channels(s, t, narrower[0])
        if kept is not None:
            points[name] = (narrower[0], kept)
    return points


def match_channels(student: np.ndarray, teacher: np.ndarray, axis: int) -> np.ndarray | None:
    """The teacher channel (along `axis`) each student channel correlates with best; None unless the
    matches are strictly increasing and each correlates at least MATCH_MIN."""
    def unit_rows(x: np.ndarray) -> np.ndarray:
        rows = np.moveaxis(np.asarray(x, np.float64), axis, 0).reshape(x.shape[axis], -1)
        rows = rows - rows.mean(axis=1, keepdims=True)
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    corr = unit_rows(student) @ unit_rows(teacher).T
    kept = corr.argmax(axis=1)
    if np.any(np.diff(kept) <= 0) or corr[np.arange(len(kept)), kept].min() < MATCH_MIN:
        return None
    return kept


__all__ = ["feature_points", "sliced_points", "match_channels", "with_outputs", "weight_shapes", "MATCH_MIN"]
