"""Gradient rules as data: one entry per op type, looked up by the builder.

A rule is a function `(ctx, node, dys, needs) -> grads`: `dys[k]` is the name of the gradient of
the loss with respect to output k (None when the loss does not depend on it), `needs[i]` says
whether input i wants a gradient, and the result holds one gradient name (or None) per input.
`inputs` lists the input slots the op is differentiable in (None: every float input), so the
builder knows which weights a rule can train before any node is emitted. `check` may refuse a
particular node (a cubic Resize, a training-mode BatchNorm) with a reason, like a missing rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.graph.model_graph import Node
    from onnxprune.recover.autodiff.context import GradContext

GradFn = Callable[["GradContext", "Node", list, list], list]
CheckFn = Callable[["GradContext", "Node"], "str | None"]


@dataclass(frozen=True)
class Rule:
    fn: GradFn
    inputs: tuple[int, ...] | None = None  # differentiable input slots; None = all float inputs
    check: CheckFn | None = None
    layer: bool = False  # a layer op: its constant inputs are parameters even when of size 1

    def slots(self, node: "Node") -> list[int]:
        n = len(node.inputs)
        return [i for i in (range(n) if self.inputs is None else self.inputs) if i < n and node.inputs[i]]


RULES: dict[str, Rule] = {}

# Ops whose outputs carry no gradient: shape arithmetic, comparisons, piecewise-constant functions.
# They stop nothing (the derivative is zero almost everywhere), unlike an op without a rule.
NO_GRADIENT = frozenset({
    "Shape", "Size", "Constant", "ConstantOfShape", "EyeLike", "Range", "NonZero", "ArgMax", "ArgMin",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN",
    "IsInf", "Floor", "Ceil", "Round", "Sign", "OneHot", "RandomNormal", "RandomUniform",
    "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial",
})


def register(ops: str | Sequence[str], inputs: tuple[int, ...] | None = None, check: CheckFn | None = None,
             layer: bool = False) -> Callable[[GradFn], GradFn]:
    """Decorator: the function is the gradient rule of every op in `ops`."""
    names = (ops,) if isinstance(ops, str) else tuple(ops)

    def wrap(fn: GradFn) -> GradFn:
        for op in names:
            RULES[op] = Rule(fn, inputs, check, layer)
        return fn
    return wrap


def lookup(op: str, domain: str = "") -> Rule | None:
    if domain not in ("", "ai.onnx"):
        return None
    from onnxprune.recover.autodiff import rules  # noqa: F401  (importing the package registers every rule)
    return RULES.get(op)
