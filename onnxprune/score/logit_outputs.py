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

import onnx

from onnxprune.couple.dependency import Dependency
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion
from onnxprune.score.fisher import fisher_scores

LAYOUT = {"Concat", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"}  # move values, don't change them
LOGIT = {"Sigmoid": "Identity", "Softmax": "LogSoftmax"}  # squashing op -> the op giving its logits
SQUASH = set(LOGIT)


def logit_view(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of `model` whose squashed outputs are logits (module doc); None when no Sigmoid or Softmax
    feeds an output so."""
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

    squashed = [i for i, n in enumerate(g.node) if n.op_type in SQUASH and only_layout_to_outputs(n.output[0], set())]
    if not squashed:
        return None
    view = onnx.ModelProto()
    view.CopyFrom(model)
    for i in squashed:  # same inputs, outputs and attributes (Softmax's axis is LogSoftmax's, in every opset)
        node = view.graph.node[i]
        node.op_type = LOGIT[node.op_type]
    return view


def _logit_view(dep: Dependency) -> tuple[str, onnx.ModelProto] | None:
    view = logit_view(dep.graph.model)
    return ("logit", view) if view is not None else None


@criterion("fisher_logit", data=True, gram=True)  # Grams: fisher's reconstruction fallback
def fisher_logit(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_):
    """fisher with sigmoid outputs probed as logits (the model's own outputs where it has none)."""
    return fisher_scores(dep, data, seed=seed, stats=stats, view=_logit_view(dep))


COMPARABLE.add("fisher_logit")
