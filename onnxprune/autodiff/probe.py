"""Output probes: the gradient of <outputs, v> with respect to chosen weights, for a probe v fed per run.

    pg = build_probe_graph(model, weights=["conv2.weight"], input_shapes={"x": (1, 3, 32, 32)})
    grads = session(pg.model).run(list(pg.grads.values()), {**feed, **{pg.probes[o]: v[o] for o in pg.probes}})

Unlike a training graph there is no loss head and no target: every float graph output is seeded with
its own probe input (d<out, v>/d out = v), so one backward pass gives v^T J for all outputs at once.
The label-free `fisher` criterion (score/fisher.py) draws v at random: E_v[(v^T J d)^2] = ||J d||^2.
Weights stay initializers (nothing to feed but the data and the probes).

A linear layer y = W x can instead be tapped: the graph returns, per channel of x, sum(x * dx) over every
other axis, dx being the gradient of x through that layer alone. That equals sum(W * dW) over the channel's
slice of W (both are the channel's share of <y, dy>), without the weight gradient's own convolution or
GEMM: about a third of a Conv's backward pass.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import onnx
from onnx import TensorProto, helper

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
    taps: dict[tuple[str, str], str] = field(default_factory=dict)  # (x, weight) -> per-channel sum(x * dx)


def build_probe_graph(model: onnx.ModelProto | str | os.PathLike, weights: Iterable[str] | None = None, *,
                      input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                      taps: Iterable[tuple[str, str]] = ()) -> ProbeGraph:
    """Gradients of sum_k <output_k, probe_k> for `weights` (default: every weight that reaches an output).
    A weight upstream of an op without a gradient rule on the way to any output is left out (`frozen`).
    `taps`: (x, weight) of linear layers reading x as their first input with that weight; each gets a
    per-channel sum(x * dx) output instead of a weight gradient (module docstring), where the weight's gradient
    would be complete. The channel axis is read on this graph's own shapes (a view decided at other shapes may
    change x's rank); a pair whose layer this graph does not see as one linear site gets its weight's gradient."""
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
    taps = list(dict.fromkeys(taps))
    wanted = list(dict.fromkeys(weights)) if weights is not None else sorted(reachable)
    complete = [(x, w) for x, w in taps if w in reachable and w not in frozen]
    tapped = _tapped_nodes(g, complete)
    wanted += [w for pair in complete if pair not in tapped for w in pair[1:]]  # untappable: W * dW instead
    trainable = list(dict.fromkeys(w for w in wanted if w in reachable and w not in frozen))
    frozen = {w: r for w, r in frozen.items() if w in set(wanted) | {w for _, w in taps}}
    if not trainable and not tapped:
        return ProbeGraph(model, list(g.inputs), {}, {}, frozen)
    probes = {}
    for out in outputs:
        probes[out] = ctx.reserve(f"{out}_probe")
    contributions: dict[int, str | None] = {i: None for nodes, _ in tapped.values() for i in nodes}
    final = _backward(ctx, trainable, {out: probes[out] for out in outputs}, contributions)
    grads = _name_gradients(ctx, final)
    sums = _tap_sums(ctx, tapped, contributions)
    return ProbeGraph(_assemble(g, ctx, grads, probes, opset, sums), list(g.inputs), probes, grads, frozen,
                      {key: name for key, (name, _) in sums.items()})


def _tapped_nodes(g: ModelGraph, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[list[int], int]]:
    """(x, weight) -> (the nodes reading x as their first input and the weight as their second, x's channel
    axis), for the pairs whose every such node is one linear site on this graph with the weight's input axis as
    long as x's channel axis."""
    from onnxprune.couple.ops import rule_for

    wanted = set(pairs)
    nodes: dict[tuple[str, str], list] = {}
    for node in g.nodes:
        key = tuple(node.inputs[:2])
        if len(key) == 2 and key in wanted:
            nodes.setdefault(key, []).append(node)
    found = {}
    for key, readers in nodes.items():
        sites = [rule.linear_site(g, n) if (rule := rule_for(n)) is not None else None for n in readers]
        axes = {(s.x_axis, s.weight_axis) for s in sites if s is not None and s.x == key[0]}
        shape = g.shape(key[0])
        if None in sites or len(axes) != 1 or shape is None:
            continue
        x_axis, w_axis = next(iter(axes))
        if x_axis < len(shape) and shape[x_axis] == g.const(key[1]).shape[w_axis]:
            found[key] = ([n.index for n in readers], x_axis)
    return found


def _tap_sums(ctx: GradContext, tapped: dict, contributions: dict[int, str | None]
              ) -> dict[tuple[str, str], tuple[str, int]]:
    """(x, weight) -> (output name, channel count): sum(x * dx) over every axis but x's channel axis, dx summed
    over the tapped nodes (one weight read twice by the same x: both shares), in float32 at least (a float16
    sum over positions overflows where W * dW summed in numpy did not)."""
    out = {}
    for (x, weight), (nodes, axis) in tapped.items():
        parts = [contributions[i] for i in nodes if contributions.get(i)]
        if len(parts) != len(nodes):
            continue
        dx = parts[0] if len(parts) == 1 else ctx.emit("Sum", parts)
        xs, dxs = x, dx
        if ctx.elem_type(x) not in (TensorProto.FLOAT, TensorProto.DOUBLE):
            xs, dxs = (ctx.emit("Cast", [t], to=TensorProto.FLOAT) for t in (x, dx))
        product = ctx.emit("Mul", [xs, dxs])
        name = ctx.reserve(f"{x}_{weight}_tap")
        others = [a for a in range(ctx.rank(x)) if a != axis]
        if others:
            ctx.emit("ReduceSum", [product, ctx.ints(others)], outputs=[name], keepdims=0)
        else:  # x is the channel vector itself
            ctx.emit("Identity", [product], outputs=[name])
        out[(x, weight)] = (name, int(ctx.shape(x)[axis]))
    return out


def _assemble(g: ModelGraph, ctx: GradContext, grads: dict[str, str], probes: dict[str, str],
              opset: int, sums: Mapping[tuple[str, str], tuple[str, int]] = {}) -> onnx.ModelProto:
    model = g.model
    inputs = [copy.deepcopy(i) for i in model.graph.input if i.name not in g.constants]
    for out, probe in probes.items():
        dims = [f"{probe}_{i}" for i in range(len(ctx.shape(out)))]
        inputs.append(helper.make_tensor_value_info(probe, ctx.elem_type(out), dims))
    outputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(g.constants[w].dtype),
                                             list(g.constants[w].shape)) for w, name in grads.items()]
    outputs += [helper.make_tensor_value_info(name, TensorProto.DOUBLE if ctx.elem_type(x) == TensorProto.DOUBLE
                                              else TensorProto.FLOAT, [channels])
                for (x, _), (name, channels) in sums.items()]
    nodes = _live(ctx.forward_nodes + ctx.nodes, [o.name for o in outputs])
    used = {t for n in nodes for t in n.input}
    initializers = [i for i in list(model.graph.initializer) + ctx.initializers if i.name in used]
    inputs = [i for i in inputs if i.name in used or i.name in probes.values()]
    graph = helper.make_graph(nodes, f"{model.graph.name or 'model'}_probe", inputs, outputs, initializers)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")] + [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune.autodiff.probe",
                             ir_version=min(max(model.ir_version, 8), 10))
