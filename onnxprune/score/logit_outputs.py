"""fisher_logit: fisher with each sigmoid output probed as its logit, each softmax output as its log.

A detector or multi-label head ends in Sigmoid, and fisher probes the probabilities. On calibration data
where a class never fires (a face class on face-free crops) its probabilities sit near 0, where a logit
shift moves them by p(1 - p) of it: removing channels that lower every face logit by ~1.7 barely shows
(docs/benchmarks.md, s12-nude), and the re-solve then compensates a shift it learned on the samples,
overshooting where faces are. Probing the logit sees that damage at its size everywhere. A softmax
classifier saturates the same way: at a confident sample the top class's probability hardly moves, so
the pages near a decision weigh almost alone; its log-probabilities (LogSoftmax: the logits up to the
shift softmax ignores) do not saturate.

`logit_view` is the model with every Sigmoid whose output reaches a graph output only through layout ops
(LAYOUT: Concat, Reshape, Transpose, ...) made an Identity and every such Softmax a LogSoftmax (same axis):
the graph outputs carry logits instead, the weights are the same tensors, so fisher's channel sums apply
as they are.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.couple.dependency import Dependency
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion
from onnxprune.score.fisher import fisher_scores

LAYOUT = {"Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}  # move values, don't change them
LOGIT = {"Sigmoid": "Identity", "Softmax": "LogSoftmax"}  # squashing op -> the op giving its logits
SQUASH = set(LOGIT)


def squashed_nodes(model: onnx.ModelProto) -> list[int]:
    """Indices of the Sigmoid / Softmax nodes whose output reaches a graph output only through LAYOUT ops."""
    g = model.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    outputs = {o.name for o in g.output}

    def only_layout_to_outputs(tensor: str, seen: set[str]) -> bool:
        if tensor in seen:
            return True
        seen.add(tensor)
        users = readers.get(tensor, [])
        if not users:
            return tensor in outputs
        return all(n.op_type in LAYOUT and all(only_layout_to_outputs(o, seen) for o in n.output if o) for n in users)

    return [i for i, n in enumerate(g.node) if n.op_type in SQUASH and only_layout_to_outputs(n.output[0], set())]


def _rewrite_squashed(model: onnx.ModelProto, rewrite) -> onnx.ModelProto | None:
    """A copy of `model` with each squashed node (squashed_nodes) replaced by `rewrite(node, initializers)`'s
    nodes, in order; None when nothing is squashed. `rewrite` may add constants to the initializers."""
    squashed = squashed_nodes(model)
    if not squashed:
        return None
    view = onnx.ModelProto()
    view.CopyFrom(model)
    nodes = list(view.graph.node)
    for i in sorted(squashed, reverse=True):  # from the back: earlier indices stay valid
        nodes[i:i + 1] = rewrite(nodes[i], view.graph.initializer)
    del view.graph.node[:]
    view.graph.node.extend(nodes)
    return view


def _constant(initializers, name: str, value: float) -> str:
    initializers.append(numpy_helper.from_array(np.array(value, np.float32), name))
    return name


def logit_view(model: onnx.ModelProto, floor: float | None = None) -> onnx.ModelProto | None:
    """A copy of `model` whose squashed outputs are logits (module doc), raised to at least the logit of
    probability `floor` when given; None when no Sigmoid or Softmax feeds an output so."""
    def as_logit(node, initializers):  # same inputs, outputs and attributes (Softmax's axis is LogSoftmax's)
        squash, node.op_type = node.op_type, LOGIT[node.op_type]
        if floor is None:
            return [node]
        # the logit to a new name, then Max(logit, floor) under the output's name
        low = math.log(floor / (1 - floor)) if squash == "Sigmoid" else math.log(floor)
        out, node.output[0] = node.output[0], f"{node.output[0]}/logit"
        bound = _constant(initializers, f"{node.output[0]}/floor", low)
        return [node, helper.make_node("Max", [node.output[0], bound], [out])]

    return _rewrite_squashed(model, as_logit)


def bernoulli_view(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` whose squashed Sigmoid outputs are f(z) = 2 atan(tanh(z / 4)) of their logit z
    (Softmax outputs: LogSoftmax, as in `logit_view`); None when nothing is squashed. f'(z) = sqrt(p (1 - p))
    with p = sigmoid(z), so a probe back-propagated through f weighs each cell's logit damage by the Fisher
    information of a Bernoulli output: between the probability's p (1 - p) (fisher), which hides a detector's
    background, and the logit's 1 (fisher_logit), which lets the far background, where no decision is read,
    steer the ranking. Only the slope at the dense point matters; the values are not read."""
    def through_f(node, initializers):
        if node.op_type == "Softmax":
            node.op_type = "LogSoftmax"
            return [node]
        z, out, base = node.input[0], node.output[0], f"{node.output[0]}/bernoulli"
        quarter, two = _constant(initializers, f"{base}/quarter", 0.25), _constant(initializers, f"{base}/two", 2.0)
        return [helper.make_node("Mul", [z, quarter], [f"{base}/q"]), helper.make_node("Tanh", [f"{base}/q"], [f"{base}/t"]),
                helper.make_node("Atan", [f"{base}/t"], [f"{base}/a"]), helper.make_node("Mul", [f"{base}/a", two], [out])]

    return _rewrite_squashed(model, through_f)


FLOOR = 0.01  # fisher_logit_floor: probabilities below this count as this (a detector's far background)


def _logit_view(dep: Dependency, floor: float | None = None) -> tuple[str, onnx.ModelProto] | None:
    view = logit_view(dep.graph.model, floor)
    return (f"logit{floor}", view) if view is not None else None


@criterion("fisher_logit", data=True, gram=True)  # Grams: fisher's reconstruction fallback
def fisher_logit(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_):
    """fisher with sigmoid outputs probed as logits (the model's own outputs where it has none)."""
    return fisher_scores(dep, data, seed=seed, stats=stats, view=_logit_view(dep))


@criterion("fisher_logit_floor", data=True, gram=True)
def fisher_logit_floor(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_):
    """fisher_logit with each logit raised to at least that of probability FLOOR: far-below-threshold
    scores, which no decision reads, no longer steer the ranking."""
    return fisher_scores(dep, data, seed=seed, stats=stats, view=_logit_view(dep, FLOOR))


@criterion("fisher_bernoulli", data=True, gram=True)
def fisher_bernoulli(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_):
    """fisher with sigmoid outputs probed through `bernoulli_view` (each logit weighed by sqrt(p (1 - p)))."""
    view = bernoulli_view(dep.graph.model)
    return fisher_scores(dep, data, seed=seed, stats=stats, view=("bernoulli", view) if view is not None else None)


COMPARABLE.update({"fisher_logit", "fisher_logit_floor", "fisher_bernoulli"})
