"""Layers to re-solve, grouped into waves: a wave's inputs depend only on layers of earlier waves."""

from __future__ import annotations

from typing import Protocol, Sequence, TypeVar

from onnxprune.graph.model_graph import ModelGraph


class _AtNode(Protocol):
    node: int  # the node's index in the graph


T = TypeVar("T", bound=_AtNode)


def topological_waves(g: ModelGraph, layers: Sequence[T]) -> list[list[T]]:
    """`layers` grouped by longest path from the inputs, counting only those layers: a wave never feeds
    itself, so each can be solved from the solutions of the waves before it."""
    by_node = {layer.node: layer for layer in layers}
    level: dict[str, int] = {}
    waves: dict[int, list[T]] = {}
    for node in g.nodes:
        depth = max((level.get(t, 0) for t in node.inputs if t), default=0)
        if node.index in by_node:
            waves.setdefault(depth, []).append(by_node[node.index])
            depth += 1
        for t in node.outputs:
            if t:
                level[t] = depth
    return [waves[k] for k in sorted(waves)]
