"""The gradient rule of every op: the tables of the rules modules, joined; looked up by the builder."""

from __future__ import annotations

from typing import Callable, Sequence

from onnxprune.autodiff.rule import CheckFn, GradFn, Rule, RuleTable
from onnxprune.autodiff.rules import (activation, attention, conv, elementwise, fused, linear, norm, pool, quantize,
                                      recurrent, reduce, resize, select, shape)

# every rules module, explicitly: adding an op family is one file in rules/ and one entry here
RULE_MODULES = (activation, attention, conv, elementwise, fused, linear, norm, pool, quantize, recurrent, reduce, resize,
                select, shape)
RULES: dict[str, Rule] = {op: rule for module in RULE_MODULES for op, rule in module.GRADIENTS.items()}

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
    """Decorator for rules defined outside this package: the function becomes the gradient rule of
    every op in `ops` (replacing a built-in one)."""
    table = RuleTable()
    wrap = table.register(ops, inputs, check, layer)

    def add(fn: GradFn) -> GradFn:
        wrap(fn)
        RULES.update(table)
        return fn
    return add


def lookup(op: str, domain: str = "") -> Rule | None:
    """The rule of `op`; ops of other domains are keyed "domain.Op" (com.microsoft.Attention)."""
    return RULES.get(op if domain in ("", "ai.onnx") else f"{domain}.{op}")
