"""Output probes: the gradient of <outputs, v> with respect to chosen weights, for a probe v fed per run.

    pg = build_probe_graph(model, weights=["conv2.weight"], input_shapes={"x": (1, 3, 32, 32)})
    grads = session(pg.model).run(list(pg.grads.values()), {**feed, **{pg.probes[o]: v[o] for o in pg.probes}})

Unlike a training graph there is no loss head and no target: every float graph output is seeded with
its own probe input (d<out, v>/d out = v), so one backward pass gives v^T J for all outputs at once.
The label-free `fisher` criterion (score/fisher.py) draws v at random: E_v[(v^T J d)^2] = ||J d||^2.
Weights stay initializers (nothing to feed but the data and the probes).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import onnx
from onnx import helper

from onnxprune.autodiff.analysis import analyse
from onnxprune.autodiff.builder import (TRAINING_OPSET, _backward, _live, _load, _name_gradients, _opset,
                                        _upgrade, analysed_graph)
from onnxprune.autodiff.context import GradContext
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph


@dataclass
class ProbeGraph:
    model: onnx.ModelProto          # inputs: the model's data inputs and one probe per output
    inputs: list[str]               # the model's data inputs
    probes: dict[str, str]          # graph output -> its probe input (same shape as the output)
    grads: dict[str, str]           # weight -> its gradient output
    frozen: dict[str, str] = field(default_factory=dict)  # weight -> why no complete gradient reaches it


def build_probe_graph(model: onnx.ModelProto | str | os.PathLike, weights: Iterable[str] | None = None, *,
                      input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> ProbeGraph:
    """Gradients of sum_k <output_k, probe_k> for `weights` (default: every weight that reaches an output).
    A weight upstream of an op without a gradient rule on the way to any output is left out (`frozen`)."""
    model = _load(model)
    opset = _opset(model)
    if opset < TRAINING_OPSET:
        model, opset = _upgrade(model), TRAINING_OPSET
    g = analysed_graph(model, input_shapes)
    forward = [copy.deepcopy(n.proto) for n in g.nodes]
    ctx = GradContext(g, forward, opset)
    outputs = [o for o in g.outputs if ctx.is_float(o)]
    if not outputs:
        raise BadInputError("no float output to probe")
    reachable: set[str] = set()
    frozen: dict[str, str] = {}
    for out in outputs:  # a weight counts only if every output's gradient reaches it whole
        found = analyse(ctx, out, None)
        reachable.update(found.trainable)
        frozen.update(found.frozen)
    wanted = list(dict.fromkeys(weights)) if weights is not None else sorted(reachable)
    trainable = [w for w in wanted if w in reachable and w not in frozen]
    frozen = {w: r for w, r in frozen.items() if w in set(wanted)}
    if not trainable:
        return ProbeGraph(model, list(g.inputs), {}, {}, frozen)
    probes = {}
    for out in outputs:
        probes[out] = ctx.reserve(f"{out}_probe")
    final = _backward(ctx, trainable, {out: probes[out] for out in outputs})
    grads = _name_gradients(ctx, final)
    return ProbeGraph(_assemble(g, ctx, grads, probes, opset), list(g.inputs), probes, grads, frozen)


def _assemble(g: ModelGraph, ctx: GradContext, grads: dict[str, str], probes: dict[str, str],
              opset: int) -> onnx.ModelProto:
    model = g.model
    inputs = [copy.deepcopy(i) for i in model.graph.input if i.name not in g.constants]
    for out, probe in probes.items():
        dims = [f"{probe}_{i}" for i in range(len(ctx.shape(out)))]
        inputs.append(helper.make_tensor_value_info(probe, ctx.elem_type(out), dims))
    outputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(g.constants[w].dtype),
                                             list(g.constants[w].shape)) for w, name in grads.items()]
    nodes = _live(ctx.forward_nodes + ctx.nodes, [o.name for o in outputs])
    used = {t for n in nodes for t in n.input}
    initializers = [i for i in list(model.graph.initializer) + ctx.initializers if i.name in used]
    inputs = [i for i in inputs if i.name in used or i.name in probes.values()]
    graph = helper.make_graph(nodes, f"{model.graph.name or 'model'}_probe", inputs, outputs, initializers)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")] + [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune.autodiff.probe",
                             ir_version=min(max(model.ir_version, 8), 10))
