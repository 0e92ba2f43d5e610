"""Which weights can be trained, and which are frozen because an op on their way to the loss
has no gradient rule.

A weight upstream of such an op is frozen even if another path reaches the loss: its gradient
would be silently incomplete otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import Node
from onnxprune.autodiff.context import GradContext
from onnxprune.autodiff.registry import NO_GRADIENT, Rule, lookup

log = logging.getLogger("onnxprune")


@dataclass
class Analysis:
    candidates: list[str]                                 # float weights feeding differentiable slots
    trainable: list[str]
    frozen: dict[str, str] = field(default_factory=dict)  # weight -> why
    blocked: dict[int, str] = field(default_factory=dict)  # node index -> why no gradient passes
    reach: set[str] = field(default_factory=set)          # tensors the loss depends on differentiably
    frozen_by: dict[str, int] = field(default_factory=dict)  # frozen weight -> index of the node that stops it
    dropped: list[str] = field(default_factory=list)      # `also` tensors left out of the loss (an op without a rule)


def rule_for(ctx: GradContext, node: Node) -> tuple[Rule | None, str | None]:
    """The node's rule, or None and the reason it stops the gradient."""
    rule = lookup(node.op, node.proto.domain)
    if rule is None:
        domain = f"{node.proto.domain}." if node.proto.domain not in ("", "ai.onnx") else ""
        return None, f"no gradient rule for {domain}{node.op} at node '{node.name}'"
    reason = rule.check(ctx, node) if rule.check else None
    if reason:
        return None, f"{reason} (node '{node.name}')"
    return rule, None


def differentiable_inputs(ctx: GradContext, node: Node, rule: Rule | None) -> list[int]:
    """Input slots a gradient would flow into; for an op without a rule, every float input."""
    if node.op in NO_GRADIENT and node.proto.domain in ("", "ai.onnx"):
        return []
    slots = rule.slots(node) if rule else [i for i, t in enumerate(node.inputs) if t]
    return [i for i in slots if ctx.is_float(node.inputs[i]) or (rule is not None and rule.integer)]


def analyse(ctx: GradContext, output: str, requested: Iterable[str] | None, also: Iterable[str] = ()) -> Analysis:
    """Which weights train toward `output` (and the tensors `also` carrying loss terms: other outputs; those
    behind an op without a gradient rule are left out and listed in `dropped`)."""
    g = ctx.g
    dropped: list[str] = []
    rules = {n.index: rule_for(ctx, n) for n in g.nodes}
    slots = {n.index: differentiable_inputs(ctx, n, rules[n.index][0]) for n in g.nodes}

    reach = _reach(g, [output], slots)
    for other in also:  # another output joins the loss only where every op on its way has a rule: one that
        extra = _reach(g, [other], slots)  # does not would freeze weights the primary output trains
        stops = [n for n in g.nodes if rules[n.index][0] is None and slots[n.index]
                 and any(t in extra and t not in reach for t in n.outputs if t)]  # a stop of its own
        if stops:
            log.info("output '%s' is not distilled: %s", other, rules[stops[0].index][1])
            dropped.append(other)
        else:
            reach |= extra

    candidates = []
    seen = set()
    for node in g.nodes:
        rule = rules[node.index][0]
        for i in slots[node.index]:
            name = node.inputs[i]
            if name in seen or name not in g.constants:
                continue
            value = g.constants[name]
            layer = rule is None or rule.layer
            if value.ndim >= 1 and (value.size > 1 or layer) and np.issubdtype(value.dtype, np.floating):
                seen.add(name)
                candidates.append(name)

    blocked = {n.index: rules[n.index][1] for n in g.nodes
               if rules[n.index][0] is None and slots[n.index] and any(t in reach for t in n.outputs if t)}
    frozen: dict[str, str] = {}
    frozen_by: dict[str, int] = {}
    candidate_set = set(candidates)
    for index in sorted(blocked):  # the block nearest the inputs names the reason
        for weight in _upstream(ctx, g.nodes[index], slots):
            if weight in candidate_set and weight not in frozen:
                frozen[weight] = blocked[index]
                frozen_by[weight] = index

    reachable = [c for c in candidates if c in reach]
    if requested is None:
        trainable = [c for c in reachable if c not in frozen]
    else:
        requested = list(dict.fromkeys(requested))
        unknown = [w for w in requested if w not in candidate_set]
        if unknown:
            raise BadInputError(f"not trainable weights (float constants of rank >= 1 feeding a differentiable op): "
                                f"{unknown}")
        unused = [w for w in requested if w not in reach]
        if unused:
            raise BadInputError(f"weights that do not affect the loss: {unused}")
        trainable = [w for w in requested if w not in frozen]
        frozen = {w: r for w, r in frozen.items() if w in requested}
    frozen_by = {w: i for w, i in frozen_by.items() if w in frozen and w in reach}
    return Analysis(candidates, trainable, frozen, blocked, reach, frozen_by, dropped)


def _reach(g, outputs: list[str], slots: dict[int, list[int]]) -> set[str]:
    """Tensors the `outputs` depend on through (possibly differentiable) input slots."""
    reach = set(outputs)
    for node in reversed(g.nodes):
        if any(t in reach for t in node.outputs if t):
            reach.update(node.inputs[i] for i in slots[node.index])
    return reach


def frozen_summary(analysis: Analysis, shown: int = 6) -> list[str]:
    """One line per op that stops gradients: its reason (op type and node) and the weights it freezes."""
    by_node: dict[int, list[str]] = {}
    for weight, index in analysis.frozen_by.items():
        by_node.setdefault(index, []).append(weight)
    lines = []
    for index, weights in sorted(by_node.items()):
        names = ", ".join(weights[:shown]) + (f" and {len(weights) - shown} more" if len(weights) > shown else "")
        count = f"{len(weights)} weights upstream stay" if len(weights) != 1 else "1 weight upstream stays"
        lines.append(f"{analysis.blocked[index]}: {count} frozen ({names})")
    return lines


def _upstream(ctx: GradContext, node: Node, slots: dict[int, list[int]]) -> list[str]:
    """Tensors a node's differentiable inputs depend on, through differentiable inputs only."""
    g = ctx.g
    stack = [node.inputs[i] for i in slots[node.index]]
    seen: set[str] = set()
    order = []
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        order.append(t)
        producer = g.producer.get(t)
        if producer is not None:
            p = g.nodes[producer]
            stack.extend(p.inputs[i] for i in slots[p.index])
    return order
