"""Which tensors are fixed at export time: constants, and values computed only from constants.

A QDQ model's weights are DequantizeLinear outputs of int8 initializers: not constants themselves,
but as fixed as any initializer, so weight-bearing rules accept them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.graph.model_graph import ModelGraph

from onnxprune.load.constants import NONDETERMINISTIC

_MEMO: "WeakKeyDictionary[ModelGraph, dict[str, bool]]" = WeakKeyDictionary()


def is_static(g: "ModelGraph", tensor: str | None) -> bool:
    """True for a constant, or a tensor every ancestor of which is a constant (no graph input)."""
    if tensor is None:
        return False
    memo = _MEMO.setdefault(g, {})
    stack = [tensor]
    while stack:  # iterative post-order: deep weight chains must not hit the recursion limit
        t = stack[-1]
        if t in memo:
            stack.pop()
            continue
        if g.is_const(t):
            memo[t] = True
            stack.pop()
            continue
        producer = g.producer.get(t)
        node = g.nodes[producer] if producer is not None else None
        if node is None or node.op in NONDETERMINISTIC or not any(node.inputs):
            memo[t] = False
            stack.pop()
            continue
        pending = [i for i in node.inputs if i and i not in memo]
        if pending:  # ONNX graphs are acyclic, so this terminates
            stack.extend(pending)
            continue
        memo[t] = all(memo[i] for i in node.inputs if i)
        stack.pop()
    return memo[tensor]
