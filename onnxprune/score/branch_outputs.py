"""Both branches of an output's If, probed side by side: the view fisher back-propagates through.

A wake-word model (openWakeWord's hey_jarvis) returns If(p >= 0.5, verifier(x), p): the autodiff has no rule
for If (its branches read outer tensors, not inputs), so no gradient reached any weight and fisher fell
back to reconstruction. `branch_view` inlines each such If's branches into the main graph and returns both
branch values as outputs instead of the If's: every weight on either path gets its gradient, and each
branch's damage is measured on every sample, whichever branch the sample takes. Only an If whose outputs
are graph outputs read by nothing else, and whose branches hold no nested subgraphs, is inlined.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

BRANCHES = ("then_branch", "else_branch")


def branch_view(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` with each inlinable output If replaced by its branches (module doc); None if none."""
    g = model.graph
    outputs = {o.name for o in g.output}
    read = {t for n in g.node for t in n.input}
    picks = [i for i, n in enumerate(g.node) if n.op_type == "If" and _inlinable(n, outputs, read)]
    if not picks:
        return None
    view = onnx.ModelProto()
    view.CopyFrom(model)
    nodes, new_outputs = [], {}
    for i, node in enumerate(view.graph.node):
        if i not in picks:
            nodes.append(node)
            continue
        branches = {a.name: a.g for a in node.attribute if a.name in BRANCHES}
        for branch in BRANCHES:
            inlined, values, inits = _inline(branches[branch], f"{node.output[0]}/{branch.split('_')[0]}")
            nodes.extend(inlined)
            view.graph.initializer.extend(inits)
            for out, value in zip(node.output, values):
                new_outputs.setdefault(out, []).append(value)
    del view.graph.node[:]
    view.graph.node.extend(nodes)
    kept = []
    for o in view.graph.output:
        if o.name not in new_outputs:
            kept.append(o)
            continue
        for value in new_outputs[o.name]:  # each branch's value as the If's output was declared
            info = onnx.ValueInfoProto()
            info.CopyFrom(o)
            info.name = value
            kept.append(info)
    del view.graph.output[:]
    view.graph.output.extend(kept)
    return view


def _inlinable(node: onnx.NodeProto, outputs: set[str], read: set[str]) -> bool:
    if not all(o in outputs and o not in read for o in node.output if o):
        return False
    branches = [a.g for a in node.attribute if a.name in BRANCHES]
    return len(branches) == 2 and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                          for b in branches for n in b.node for a in n.attribute)


def _inline(branch: onnx.GraphProto, prefix: str) -> tuple[list[onnx.NodeProto], list[str], list[onnx.TensorProto]]:
    """The branch's nodes with every tensor it defines renamed under `prefix` (outer reads kept), the names
    of its output values, and its own initializers renamed."""
    own = {t for n in branch.node for t in n.output if t} | {i.name for i in branch.initializer}
    name = {t: f"{prefix}/{t}" for t in own}
    nodes = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = f"{prefix}/{n.name}" if n.name else ""
        copy.input[:] = [name.get(t, t) for t in n.input]
        copy.output[:] = [name.get(t, t) for t in n.output]
        nodes.append(copy)
    inits = []
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = name[init.name]
        inits.append(copy)
    values = []
    for o in branch.output:
        if o.name in name:
            values.append(name[o.name])
        else:  # an outer tensor returned as it is: give the output a name of its own
            values.append(f"{prefix}/{o.name}")
            nodes.append(helper.make_node("Identity", [o.name], [values[-1]]))
    return nodes, values, inits


ROUNDS = 4  # nesting depth of decided Ifs followed (a branch may hold Ifs of its own)


def decided_view(model: onnx.ModelProto, input_shapes) -> onnx.ModelProto | None:
    """A copy of `model` with each If whose condition the analysed shapes decide (PyTorch's `squeeze(0)` and
    batch checks: Equal(Shape(x)[0], 1)) replaced by the branch it takes; None if there is none. For
    probing only: at other shapes the other branch may run, so the pruned model keeps its Ifs."""
    from onnxprune.graph.model_graph import ModelGraph

    view = None
    for _ in range(ROUNDS):
        current = view or model
        if not any(n.op_type == "If" for n in current.graph.node):
            break
        g = ModelGraph(current, input_shapes)
        taken = {}
        for i, node in enumerate(current.graph.node):
            value = g.static_value(node.input[0]) if node.op_type == "If" else None
            if value is not None and np.asarray(value[0]).size == 1:
                taken[i] = "then_branch" if bool(np.asarray(value[0]).reshape(-1)[0]) else "else_branch"
        if not taken:
            break
        view = _replace_ifs(current, taken)
    return view


def _replace_ifs(model: onnx.ModelProto, taken: dict[int, str]) -> onnx.ModelProto:
    view = onnx.ModelProto()
    view.CopyFrom(model)
    nodes = []
    for i, node in enumerate(view.graph.node):
        if i not in taken:
            nodes.append(node)
            continue
        # one branch, its names as they are: ONNX names are unique across scopes, and nested
        # subgraphs keep reading this branch's tensors by those names
        branch = next(a.g for a in node.attribute if a.name == taken[i])
        nodes.extend(branch.node)
        view.graph.initializer.extend(branch.initializer)
        nodes.extend(helper.make_node("Identity", [v.name], [o]) for v, o in zip(branch.output, node.output) if o)
    del view.graph.node[:]
    view.graph.node.extend(nodes)
    return view
