"""What a gradient rule is, and the table each rules module fills: rules as data, one entry per op type.

A rule is a function `(ctx, node, dys, needs) -> grads`: `dys[k]` is the name of the gradient of
the loss with respect to output k (None when the loss does not depend on it), `needs[i]` says
whether input i wants a gradient, and the result holds one gradient name (or None) per input.
`inputs` lists the input slots the op is differentiable in (None: every float input), so the
builder knows which weights a rule can train before any node is emitted. `check` may refuse a
particular node (a cubic Resize, a training-mode BatchNorm) with a reason, like a missing rule.
`integer` lets the gradient pass through the rule's integer inputs and outputs (a quantized activation
between QuantizeLinear and DequantizeLinear carries a float gradient: rules/quantize.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.graph.model_graph import Node
    from onnxprune.autodiff.context import GradContext

GradFn = Callable[["GradContext", "Node", list, list], list]
CheckFn = Callable[["GradContext", "Node"], "str | None"]


@dataclass(frozen=True)
class Rule:
    fn: GradFn
    inputs: tuple[int, ...] | None = None  # differentiable input slots; None = all float inputs
    check: CheckFn | None = None
    layer: bool = False  # a layer op: its constant inputs are parameters even when of size 1
    integer: bool = False  # its integer inputs/outputs carry a (float) gradient too

    def slots(self, node: "Node") -> list[int]:
        n = len(node.inputs)
        return [i for i in (range(n) if self.inputs is None else self.inputs) if i < n and node.inputs[i]]


class RuleTable(dict):
    """One rules module's gradient rules by op type; `registry` joins the tables."""

    def register(self, ops: str | Sequence[str], inputs: tuple[int, ...] | None = None, check: CheckFn | None = None,
                 layer: bool = False, integer: bool = False) -> Callable[[GradFn], GradFn]:
        """Decorator: the function is the gradient rule of every op in `ops`."""
        names = (ops,) if isinstance(ops, str) else tuple(ops)

        def wrap(fn: GradFn) -> GradFn:
            for op in names:
                self[op] = Rule(fn, inputs, check, layer, integer)
            return fn
        return wrap
