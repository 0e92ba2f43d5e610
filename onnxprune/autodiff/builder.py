"""Reverse-mode pass: a model becomes a training graph in standard ONNX ops.

The training graph takes the model's inputs, the trainable weights and a target, and returns the
loss, the logits and the gradient of every trainable weight. Forward nodes are kept as they are
(BatchNorm stays affine with its running statistics); backward nodes come from the rules.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph, resolve_input_shapes
from onnxprune.load.tensors import bodies
from onnxprune.autodiff.analysis import analyse, frozen_summary, rule_for
from onnxprune.autodiff.context import GradContext
from onnxprune.autodiff.feature_loss import emit_feature_terms
from onnxprune.autodiff.losses import LossHead, emit_loss

log = logging.getLogger("onnxprune")
TRAINING_OPSET = 17  # ScatterElements(reduction=add) needs 16; LayerNormalization 17
PROBE_BATCH = 2      # a batch of 2 tells broadcast axes (size 1) from the batch axis


@dataclass
class TrainingGraph:
    model: onnx.ModelProto          # inputs: data inputs, trainable weights, target
    inputs: list[str]               # the original model's data inputs
    trainable: list[str]            # weights fed as inputs, in the order nodes first read them
    grads: dict[str, str]           # weight -> name of its gradient output
    frozen: dict[str, str]          # weight -> why it cannot be trained
    target: str                     # labels (int64), targets or teacher logits
    loss: str                       # scalar loss output
    logits: str                     # the forward output the loss is computed on
    loss_kind: str
    blocked: dict[str, str] = field(default_factory=dict)  # node name -> why no gradient passes it
    build_ms: float = 0.0
    frozen_summary: list[str] = field(default_factory=list)  # one line per op that freezes weights
    feature_targets: dict[str, str] = field(default_factory=dict)  # student tensor -> teacher input (features)
    others: list[str] = field(default_factory=list)  # other outputs matched to the teacher's (in feature_targets)
    others_weight: float = 0.0                       # the weight of each of them (autodiff/feature_loss.py terms)
    balance: np.ndarray | None = None  # the balanced distillation loss's weights (validation reuses them)


def build_training_graph(model: onnx.ModelProto | str | os.PathLike, trainable: Iterable[str] | None = None,
                         loss: str = "cross_entropy", *, output: str | None = None,
                         input_shapes: Mapping[str, tuple[int, ...]] | None = None, temperature: float = 1.0,
                         distill: str = "kl", label_smoothing: float = 0.0,
                         features: tuple[Sequence[str], float] = ((), 0.0),
                         balance: np.ndarray | None = None,
                         others: tuple[Sequence[str], float] = ((), 0.0)) -> TrainingGraph:
    """Differentiate `model`'s `output` (default: its first output) under `loss`.

    `trainable` defaults to every float weight (initializer or Constant, rank >= 1) that feeds a
    differentiable op and affects the loss; weights upstream of an op without a gradient rule are
    reported in `frozen` instead. `loss` is "cross_entropy" (int64 labels), "mse" (float targets)
    or "distill" (teacher logits; `distill`="kl" with `temperature`, "mse" on the logits, or "balanced":
    squared error weighted per element by `balance`, see recover/distill_weights.py; "detect": `balance` is
    a DetectSpec, see autodiff/detect_loss.py).
    `features` = (tensor names, weight) adds intermediate-feature terms (autodiff/feature_loss.py): the
    teacher's values of those tensors become inputs named in `feature_targets`.
    `others` = (output names, weight each) adds the same terms on other outputs of the model (a detector's box
    head beside its scores, a recurrent state), each at the full weight; their weights train too.
    """
    start = time.perf_counter()
    model = _load(model)
    opset = _opset(model)
    if opset < TRAINING_OPSET:
        model, opset = _upgrade(model), TRAINING_OPSET
    g = analysed_graph(model, input_shapes)
    output = output or g.outputs[0]
    if output not in g.outputs:
        raise BadInputError(f"'{output}' is not an output of the model; its outputs are {g.outputs}")
    forward = [copy.deepcopy(n.proto) for n in g.nodes]
    ctx = GradContext(g, forward, opset)
    if not ctx.is_float(output):
        raise BadInputError(f"output '{output}' is not a float tensor; it cannot carry a loss")
    found = analyse(ctx, output, trainable, also=others[0])
    others = ([o for o in others[0] if o not in found.dropped], others[1])
    summary = frozen_summary(found)
    for line in summary:  # said before any training step, once per stopping op
        log.warning("frozen weights: %s", line)
    if not found.trainable:
        why = summary[0] if summary else _subgraph_stop(g, found.reach)
        raise BadInputError("nothing to train: no float weight reaches the loss through ops with gradient rules"
                            + (f" ({why})" if why else ""))
    head = emit_loss(ctx, loss, output, temperature=temperature, distill=distill, label_smoothing=label_smoothing,
                     balance=balance)
    terms = emit_feature_terms(ctx, list(features[0]), features[1])
    extra = emit_feature_terms(ctx, list(others[0]), others[1] * len(others[0]))  # each output at full weight
    for part in (terms, extra):
        if part.loss is not None:
            head = LossHead(ctx.emit("Add", [head.loss, part.loss]), head.dlogits, head.target)
    final = _backward(ctx, found.trainable, {output: head.dlogits, **terms.seeds, **extra.seeds})
    grads = _name_gradients(ctx, final)
    built = _assemble(g, ctx, found.trainable, grads, head, output, opset, terms.inputs + extra.inputs)
    blocked = {g.nodes[i].name: reason for i, reason in found.blocked.items()}
    return TrainingGraph(built, list(g.inputs), found.trainable, grads, found.frozen, head.target.name, head.loss,
                         output, loss, blocked, (time.perf_counter() - start) * 1e3, summary,
                         {**terms.targets, **extra.targets}, list(extra.targets), others[1] if extra.targets else 0.0,
                         balance if distill in ("balanced", "detect") else None)


def _subgraph_stop(g: ModelGraph, reach) -> str:
    """An If/Loop/Scan on the way to the loss: its branches read the layers' outputs from outside, not
    through inputs, so no gradient reaches them (and no weight upstream counts as frozen by it)."""
    for node in reversed(g.nodes):
        if any(o in reach for o in node.outputs if o) and bodies(node.proto):
            return f"{node.op} '{node.name}' has no gradient rule: the layers its branches read stay frozen"
    return ""


def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from onnxprune.load.model import load_model
    return load_model(model)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx import version_converter
    try:
        return version_converter.convert_version(model, TRAINING_OPSET)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BadInputError(f"cannot raise the model to opset {TRAINING_OPSET} for training ({first})") from None


def analysed_graph(model: onnx.ModelProto, given: Mapping[str, tuple[int, ...]] | None) -> ModelGraph:
    """The model's graph at the probe shapes (_probe_shapes); at the given shapes instead when the probe batch
    leaves tensor shapes unknown that the given ones resolve: a view with batch 1 baked in (khmersm's dynamo
    export) cannot run at 2, and a rule needing the shape of a tensor after it would refuse the model."""
    probe = _probe_shapes(model, given)
    g = ModelGraph(model, probe)
    unknown = _unknown_shapes(g)
    if not unknown or not given:
        return g
    resolved = resolve_input_shapes(model, given)
    if resolved == probe:
        return g
    other = ModelGraph(model, resolved)
    if len(_unknown_shapes(other)) >= len(unknown):
        return g
    log.info("autodiff: analysed at the given input shapes %s: at a batch of %d the shapes of %d tensors are "
             "unknown (e.g. '%s')", dict(resolved), PROBE_BATCH, len(unknown), unknown[0])
    return other


def _unknown_shapes(g: ModelGraph) -> list[str]:
    return [t for n in g.nodes if n.op != "Constant" for t in n.outputs if t and g.shape(t) is None]


def _probe_shapes(model: onnx.ModelProto, given) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes for analysis, with a dynamic batch axis set to PROBE_BATCH unless the caller gave
    it larger than 1: a leading axis that is a sequence inside the model (silero_vad_seq's frames become the
    LSTM's time steps) must keep its length, or rules unrolled over it split the wrong number of steps."""
    shapes = resolve_input_shapes(model, given)
    for inp in model.graph.input:
        if inp.name not in shapes or not inp.type.tensor_type.shape.dim:
            continue
        if given and inp.name in given and len(given[inp.name]) and int(given[inp.name][0]) > 1:
            continue
        first = inp.type.tensor_type.shape.dim[0]
        if not (first.HasField("dim_value") and first.dim_value > 0):
            shapes[inp.name] = (PROBE_BATCH,) + tuple(shapes[inp.name][1:])
    return shapes


def _backward(ctx: GradContext, trainable: list[str], seeds: Mapping[str, str],
              taps: dict[int, str | None] | None = None) -> dict[str, str]:
    """Walk the nodes in reverse, calling each node's rule; returns weight -> summed gradient.
    `seeds`: tensor -> the loss's gradient with respect to it (the logits, and any features).
    `taps`: node index -> None, filled with the gradient of that node's first input through that node
    alone (its share before the sum over the tensor's readers; autodiff/probe.py)."""
    g = ctx.g
    taps = {} if taps is None else taps
    # tensors whose gradient is needed: the weights, the tapped inputs, and what depends on them
    wants = set(trainable) | {g.nodes[i].inputs[0] for i in taps}
    for node in g.nodes:
        rule, _ = rule_for(ctx, node)
        if rule and any(node.inputs[i] in wants for i in rule.slots(node)):
            wants.update(t for t in node.outputs if t and (ctx.is_float(t) or rule.integer))
    pending: dict[str, list[str]] = {t: [d] for t, d in seeds.items()}

    def total(tensor: str) -> str | None:
        parts = pending.get(tensor)
        if not parts:
            return None
        if len(parts) > 1:
            pending[tensor] = [ctx.emit("Sum", parts)]
        return pending[tensor][0]

    for node in reversed(g.nodes):
        rule, _ = rule_for(ctx, node)
        if rule is None:  # blocked: everything upstream of it is frozen
            continue
        needs = [bool(t) and i in rule.slots(node) and t in wants for i, t in enumerate(node.inputs)]
        if not any(needs):
            continue
        dys = [total(t) if t else None for t in node.outputs]
        if not any(dys):
            continue
        for t, dy in zip(node.outputs, dys):  # a gradient has its tensor's type (float16 models)
            if dy:
                ctx.grad_types[dy] = ctx.elem_type(t)
        grads = rule.fn(ctx, node, dys, needs)
        if node.index in taps and needs[0] and grads:
            taps[node.index] = grads[0]
        for i, (t, need) in enumerate(zip(node.inputs, needs)):
            if not need:
                continue
            if i >= len(grads) or grads[i] is None:
                raise BadInputError(f"autodiff: the {node.op} rule gave no gradient for input {i} "
                                    f"of node '{node.name}'")
            pending.setdefault(t, []).append(grads[i])
    missing = [w for w in trainable if not pending.get(w)]
    if missing:
        raise BadInputError(f"autodiff: no gradient reached weights {missing}")
    return {w: total(w) for w in trainable}


def _name_gradients(ctx: GradContext, final: dict[str, str]) -> dict[str, str]:
    """Give each weight's gradient its own output name ("<weight>_grad")."""
    produced = {out: node for node in ctx.nodes for out in node.output}
    used = {t for node in ctx.nodes for t in node.input}
    names, renamed = {}, {}
    for weight, tensor in final.items():
        name = ctx.reserve(f"{weight}_grad")
        node = produced.get(tensor)
        if node is not None and tensor not in used and tensor not in renamed:
            node.output[list(node.output).index(tensor)] = name  # rename in place: no copy
            renamed[tensor] = name
        else:  # two weights with one gradient tensor (x + skip) read the renamed one
            ctx.emit("Identity", [renamed.get(tensor, tensor)], outputs=[name])
        names[weight] = name
    return names


def _assemble(g: ModelGraph, ctx: GradContext, trainable: list[str], grads: dict[str, str], head, output: str,
              opset: int, extra_inputs: Sequence[onnx.ValueInfoProto] = ()) -> onnx.ModelProto:
    model = g.model
    weights = set(trainable)
    forward = [n for n in ctx.forward_nodes if not (n.op_type == "Constant" and n.output[0] in weights)]
    inputs = [copy.deepcopy(i) for i in model.graph.input if i.name not in weights]
    for w in trainable:
        value = g.constants[w]
        inputs.append(helper.make_tensor_value_info(w, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)))
    inputs.append(head.target)
    inputs.extend(extra_inputs)
    initializers = [i for i in model.graph.initializer if i.name not in weights] + ctx.initializers
    elem = ctx.elem_type(output)
    outputs = [helper.make_tensor_value_info(head.loss, elem, []),
               next(copy.deepcopy(o) for o in model.graph.output if o.name == output)]
    outputs += [helper.make_tensor_value_info(grads[w], helper.np_dtype_to_tensor_dtype(g.constants[w].dtype),
                                              list(g.constants[w].shape)) for w in trainable]
    nodes = _live(forward + ctx.nodes, [o.name for o in outputs])
    used = {t for n in nodes for t in n.input} | {i.name for i in inputs}
    initializers = [i for i in initializers if i.name in used]
    graph = helper.make_graph(nodes, f"{model.graph.name or 'model'}_training", inputs, outputs, initializers)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")] + [helper.make_opsetid("", opset)]
    built = helper.make_model(graph, opset_imports=opsets, producer_name="onnxprune.autodiff",
                              ir_version=min(max(model.ir_version, 8), 10))
    return built


def _live(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """Nodes the outputs depend on, in their original order."""
    needed = set(outputs)
    keep = []
    for node in reversed(nodes):
        if any(t in needed for t in node.output if t):
            keep.append(node)
            needed.update(t for t in node.input if t)
    return keep[::-1]
