"""Residual Adds that ONNX Runtime fused into a normalization, made visible to the block finder and fused back.

ORT's transformer optimizer and the GenAI model builder write a transformer's residual sum inside
SkipLayerNormalization / SkipSimplifiedLayerNormalization: `sum = input + skip (+ bias)`, `out = norm(sum)`,
and output 3 (when present) is `sum` itself. The block finder (residual.py) looks for a plain Add, so
`unfuse` splits each such node into `Add(residual, branch)` and the plain normalization of its output,
and `refuse` fuses every normalization again with the split Add it then reads: its own where the
block stayed; where blocks were removed, their Adds' outputs were replaced by the residual stream, so
the normalization after them fuses with the Add in front of the removed ones: removing a layer
rewires the fused node's skip input, as `x + f(x) -> x` does for a plain Add. A normalization that
reads no split Add any more stays plain (post-norm BERT without a layer: LayerNorm of LayerNorm).

Which addend is the residual: the one the other depends on (a branch reads the stream it adds to);
`input` when neither does. A bias belongs to the branch: `Add(residual, Add(branch, bias))`.
A node whose mean or inverse-deviation outputs are read stays fused (it is not a block then).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

# fused op -> (the plain normalization it ends with, domain of that op, attributes that carry over,
#              position of the branch bias among the fused op's inputs; gamma is input 2, beta input 3 if any)
FUSED_NORMS = {
    "SkipLayerNormalization": ("LayerNormalization", "", ("epsilon",), 4),
    "SkipSimplifiedLayerNormalization": ("SimplifiedLayerNormalization", "", ("epsilon",), 3),
}
ADD_SUFFIX, NORM_SUFFIX, BIAS_SUFFIX = "/residual_add", "/residual_norm", "/branch_bias"


@dataclass(frozen=True)
class Fused:
    """One unfused node: the original proto and the names of the parts that replace it."""

    proto: onnx.NodeProto
    add: str  # node name of the residual Add
    norm: str  # node name of the normalization
    bias: str  # node name of the branch's bias Add ("" without a bias)
    residual_first: bool  # the Add reads (residual, branch); the original node had them as (input, skip) or swapped


def _depends(producer: dict[str, onnx.NodeProto], tensor: str, on: str) -> bool:
    """`tensor` is computed from `on` (a walk back over producers; one per fused node)."""
    stack, seen = [tensor], {tensor}
    while stack:
        node = producer.get(stack.pop())
        for t in node.input if node is not None else ():
            if t == on:
                return True
            if t and t not in seen:
                seen.add(t)
                stack.append(t)
    return False


def _read(model: onnx.ModelProto) -> set[str]:
    read = {t for n in model.graph.node for t in n.input}
    return read | {o.name for o in model.graph.output}


def unfuse(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Fused]]:
    """A copy of `model` with every fused residual normalization split in two, and what was split."""
    fused = {i for i, n in enumerate(model.graph.node) if n.op_type in FUSED_NORMS and n.domain == "com.microsoft"}
    if not fused:
        return model, []
    read, producer = _read(model), {t: n for n in model.graph.node for t in n.output if t}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    done: list[Fused] = []
    for i, node in enumerate(model.graph.node):
        outputs = list(node.output) + [""] * (4 - len(node.output))
        usable = (i in fused and len(node.input) >= 3 and node.input[0] and node.input[1]
                  and not any(t and t in read for t in outputs[1:3]))
        if not usable:
            out.graph.node.append(node)
            continue
        name = node.name or f"fused_norm_{i}"
        first, second = node.input[0], node.input[1]
        residual_first = _depends(producer, second, first) or not _depends(producer, first, second)
        residual, branch = (first, second) if residual_first else (second, first)
        total = outputs[3] or f"{name}/residual_sum"
        op, domain, keep, bias = FUSED_NORMS[node.op_type]
        if len(node.input) > bias and node.input[bias]:
            biased = f"{name}/branch_with_bias"
            out.graph.node.append(onnx.helper.make_node("Add", [branch, node.input[bias]], [biased],
                                                        name=name + BIAS_SUFFIX))
            branch = biased
        out.graph.node.append(onnx.helper.make_node("Add", [residual, branch], [total], name=name + ADD_SUFFIX))
        norm_inputs = [total, node.input[2]] + ([node.input[3]] if op == "LayerNormalization" and len(node.input) > 3
                                                and node.input[3] else [])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name in keep}
        norm = onnx.helper.make_node(op, norm_inputs, [outputs[0]], name=name + NORM_SUFFIX, domain=domain,
                                     axis=-1, **attrs)
        out.graph.node.append(norm)
        has_bias = branch == f"{name}/branch_with_bias"
        done.append(Fused(node, name + ADD_SUFFIX, name + NORM_SUFFIX, name + BIAS_SUFFIX if has_bias else "",
                          residual_first))
    if done:
        _ensure_default_opset(out)
    return out, done


def _ensure_default_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("", 17))


def refuse(model: onnx.ModelProto, fused: list[Fused]) -> onnx.ModelProto:
    """`model` (made from unfuse's output by removing nodes and renaming their readers) with every split
    normalization fused again with the split Add it reads: its own (the block stayed) or, where blocks
    went, the Add now in front of it (the skip input rewired). Adds and norms left alone stay plain."""
    if not fused:
        return model
    by_name = {n.name: n for n in model.graph.node}
    read: dict[str, int] = {}
    for t in [t for n in model.graph.node for t in n.input] + [o.name for o in model.graph.output]:
        read[t] = read.get(t, 0) + 1
    adds = {by_name[f.add].output[0]: f for f in fused if f.add in by_name}
    replace: dict[str, onnx.NodeProto | None] = {}
    own_first = sorted((f for f in fused if f.norm in by_name), key=lambda f: adds.get(by_name[f.norm].input[0]) is not f)
    for f in own_first:
        norm = by_name[f.norm]
        source = adds.get(norm.input[0])
        if source is None or source.add in replace:
            continue  # reads the stream from elsewhere (a graph input, an Add of the model's own)
        replace[source.add], replace[f.norm] = None, _fused_node(f, source, by_name, read, replace)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for n in model.graph.node:
        if n.name not in replace:
            out.graph.node.append(n)
        elif replace[n.name] is not None:
            out.graph.node.append(replace[n.name])
    return out


def _fused_node(norm: Fused, add: Fused, by_name: dict, read: dict, replace: dict) -> onnx.NodeProto:
    """The fused node of `norm`'s kind (gamma, beta, attributes) over the sum `add` computes."""
    add_node = by_name[add.add]
    residual, branch = add_node.input[0], add_node.input[1]
    bias_node = by_name.get(add.bias) if add.bias else None
    bias = ""
    if bias_node is not None and bias_node.output[0] == branch:
        branch, bias = bias_node.input[0], bias_node.input[1]
        replace[bias_node.name] = None
    node = onnx.NodeProto()
    node.CopyFrom(norm.proto)
    first_residual = add.residual_first if norm is add else norm.residual_first
    inputs = list(node.input)
    inputs[0], inputs[1] = (residual, branch) if first_residual else (branch, residual)
    position = FUSED_NORMS[node.op_type][3]
    if bias or len(inputs) > position:
        inputs += [""] * (position + 1 - len(inputs))
        inputs[position] = bias
    while inputs and not inputs[-1]:
        inputs.pop()
    del node.input[:]
    node.input.extend(inputs)
    outputs = list(node.output) + [""] * (4 - len(node.output))
    outputs[3] = add_node.output[0] if read.get(add_node.output[0], 0) > 1 else ""
    while len(outputs) > 1 and not outputs[-1]:
        outputs.pop()
    del node.output[:]
    node.output.extend(outputs)
    return node
