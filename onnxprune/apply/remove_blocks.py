"""Remove residual blocks: each block's Add output is replaced by its skip input (`x + f(x)` -> `x`),
then every node and initializer that no longer feeds a graph output is dropped.

Readers of a removed Add's output are rewired to the skip tensor; a graph output (or a tensor a
subgraph reads) keeps its name through an Identity, so the model's interface does not change.
"""

from __future__ import annotations

from typing import Iterable

import onnx

from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import Block


def _renames(blocks: Iterable[Block], g: ModelGraph) -> dict[str, str]:
    """Add output -> the tensor that replaces it, through chains of consecutive removed blocks."""
    direct = {g.nodes[b.add].outputs[0]: b.skip for b in blocks}

    def resolve(name: str) -> str:
        while name in direct:
            name = direct[name]
        return name
    return {out: resolve(out) for out in direct}


def _reads(g: ModelGraph) -> dict[int, set[str]]:
    """Tensors each node reads, including those its subgraph bodies read from the outer graph."""
    reads: dict[int, set[str]] = {n.index: set() for n in g.nodes}
    for tensor, users in g.consumers.items():
        for user in users:
            reads[user].add(tensor)
    return reads


def remove_blocks(g: ModelGraph, blocks: Iterable[Block]) -> onnx.ModelProto:
    """A new model without `blocks` (the model of `g` is not touched)."""
    blocks = list(blocks)
    drop = set().union(*(b.nodes | {b.add} for b in blocks)) if blocks else set()
    renames = _renames(blocks, g)
    reads = _reads(g)
    outputs = {o for o in g.outputs}
    keep_name = {t for t in renames if t in outputs or any(u in g.subgraph_nodes for u in g.consumers.get(t, []))}
    model = onnx.ModelProto()
    model.CopyFrom(g.model)
    graph = model.graph
    del graph.node[:]
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(g.nodes):  # dead-code elimination from the outputs back
        if node.index in drop or not (set(node.outputs) & needed):
            continue
        proto = onnx.NodeProto()
        proto.CopyFrom(node.proto)
        for i, name in enumerate(proto.input):
            if name in renames and name not in keep_name:
                proto.input[i] = renames[name]
        kept.append(proto)
        needed |= {renames.get(t, t) if t not in keep_name else t for t in reads[node.index]}
    identities = [onnx.helper.make_node("Identity", [renames[t]], [t], name=f"{t}/removed_block")
                  for t in sorted(keep_name & needed)]
    needed |= {renames[t] for t in keep_name & needed}
    graph.node.extend(_before_readers(identities, list(reversed(kept))))
    _drop_unread(graph, needed)
    return model


def _before_readers(identities: list[onnx.NodeProto], nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` in order with each Identity placed right after the producer of its input."""
    if not identities:
        return nodes
    produced_at = {t: i for i, n in enumerate(nodes) for t in n.output}
    slots: dict[int, list[onnx.NodeProto]] = {}
    for ident in identities:
        slots.setdefault(produced_at.get(ident.input[0], -1), []).append(ident)
    ordered = list(slots.get(-1, []))  # a graph input: first
    for i, node in enumerate(nodes):
        ordered.append(node)
        ordered.extend(slots.get(i, []))
    return ordered


def _drop_unread(graph: onnx.GraphProto, needed: set[str]) -> None:
    """Initializers and intermediate shapes of tensors nothing reads any more (and, in old IR versions
    that list initializers among the inputs, those inputs too)."""
    gone = {t.name for t in graph.initializer if t.name not in needed}
    keep = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    inputs = [i for i in graph.input if i.name not in gone]
    del graph.input[:]
    graph.input.extend(inputs)
    produced = {t for n in graph.node for t in n.output}
    infos = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(infos)
