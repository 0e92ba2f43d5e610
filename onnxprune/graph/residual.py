"""Residual blocks found from the graph's structure: `y = x + f(x)` regions a model can lose whole.

A block is an `Add(x, f(x))` where f(x) is read by the Add alone. The branch is the single-entry,
single-exit region between them: the nodes that depend on x (the entry), feed f(x), and are
post-dominated by the Add (every path from them to a graph output passes through it: networkx
`immediate_dominators` on the reversed node graph, from a virtual sink behind the outputs). Nodes
that depend on x but also feed something else are shared, not the block's, and stay: TorchScript
computes BERT's attention mask from Shape(x) of the first layer's input, and a KV-cache export
returns each layer's keys and values. The branch may read tensors computed elsewhere (masks, rotary
tables); what only the branch read goes with it. Removal is exact either way: the Add's output
becomes x, as if f(x) were zero.

Removing a block replaces the Add's output by x, so f(x) must have exactly x's shape (no
broadcasting; a downsampling block's projected shortcut is not an ancestor of the branch and is never
a block). A branch with no weight (GELU's `x + 0.044715 x^3`) is not a block.

Transformer layers are the pairs (attention block, the FFN block right after it); `units()` offers
layers when every attention block has its FFN block, single blocks otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import networkx as nx

from onnxprune.graph.fused_residual import ADD_SUFFIX, BIAS_SUFFIX
from onnxprune.graph.model_graph import ModelGraph

_SINK = -1
RESIDUAL_OPS = frozenset({"Add", "Sum"})  # Caffe2 exports (ResNet-50 of the ONNX zoo) add with a 2-input Sum
SPLIT_SUFFIXES = (ADD_SUFFIX, BIAS_SUFFIX)
ATTENTION_OPS = frozenset({"Softmax", "Attention", "MultiHeadAttention", "GroupQueryAttention"})


@dataclass(frozen=True)
class Block:
    """`add` (node index) computes `skip + branch`; `nodes` are the branch's node indices."""

    add: int
    skip: str
    branch: str
    nodes: frozenset[int]
    attention: bool  # the branch holds a softmax or a fused attention op


@dataclass(frozen=True)
class Unit:
    """What `--depth` removes at once: one block, or an attention block and its FFN block (a layer)."""

    blocks: tuple[Block, ...]
    name: str
    output: str  # the tensor the unit's last Add writes: the hidden state after the unit

    @property
    def skip(self) -> str:
        """The hidden state before the unit."""
        return self.blocks[0].skip

    @property
    def nodes(self) -> frozenset[int]:
        """Branch nodes and Adds of every block."""
        return frozenset().union(*(b.nodes | {b.add} for b in self.blocks))


def _post_dominator_tree(g: ModelGraph) -> nx.DiGraph:
    """Edges from each node's immediate post-dominator to it, for nodes that reach a graph output."""
    reverse = g.nx.reverse(copy=True)
    reverse.add_node(_SINK)
    for name in g.outputs:
        if name in g.producer:
            reverse.add_edge(_SINK, g.producer[name])
    tree = nx.DiGraph()
    tree.add_edges_from((parent, node) for node, parent in nx.immediate_dominators(reverse, _SINK).items()
                        if parent != node)
    return tree


def _has_weight(g: ModelGraph, nodes: frozenset[int]) -> bool:
    """Some branch node reads a constant of rank 2 or more (a projection, a convolution kernel)."""
    return any(g.is_const(t) and len(g.shape(t) or ()) >= 2 for i in nodes for t in g.nodes[i].inputs
               if g.nodes[i].op != "Constant")


def _same_shape(g: ModelGraph, a: str, b: str) -> bool:
    shape_a, shape_b = g.shape(a), g.shape(b)
    return shape_a is not None and shape_a == shape_b and g.static_dims(a) == g.static_dims(b)


def _descendants(g: ModelGraph, tensor: str) -> set[int]:
    """Nodes that depend on `tensor`."""
    found = set()
    for c in g.consumers.get(tensor, []):
        found.add(c)
        found |= nx.descendants(g.nx, c)
    return found


def _block(g: ModelGraph, add: int, skip: str, branch: str, tree: nx.DiGraph) -> Block | None:
    """The block `add = skip + branch`, or None when the Add is not a removable residual."""
    if branch not in g.producer or branch in g.outputs or g.consumers.get(branch) != [add]:
        return None
    tip = g.producer[branch]
    feeding = nx.ancestors(g.nx, tip) | {tip}
    if skip in g.producer and g.producer[skip] not in feeding:
        return None  # f does not read x: two parallel paths (a projected shortcut), not x + f(x)
    exclusive = nx.descendants(tree, add) if add in tree else set()  # nodes the Add post-dominates
    nodes = frozenset(feeding & _descendants(g, skip) & exclusive)
    if tip not in nodes or not _has_weight(g, nodes):
        return None  # f(x) does not depend on x, or f has no weight of its own (GELU's x + 0.044715 x^3)
    out = g.nodes[add].outputs[0]
    if not (_same_shape(g, skip, branch) and _same_shape(g, skip, out)):
        return None
    attention = any(g.nodes[n].op in ATTENTION_OPS for n in nodes)
    return Block(add, skip, branch, nodes, attention)


def find_blocks(g: ModelGraph) -> list[Block]:
    """Every removable residual block, in graph order."""
    tree = _post_dominator_tree(g)
    blocks = []
    for node in g.nodes:
        if node.op not in RESIDUAL_OPS or len(node.inputs) != 2 or any(g.is_const(t) for t in node.inputs):
            continue
        for skip, branch in (node.inputs, node.inputs[::-1]):
            found = _block(g, node.index, skip, branch, tree)
            if found is not None:
                blocks.append(found)
                break
    return blocks


def _common_prefix(names: list[str], separators: str) -> str:
    """The longest common prefix of `names`, cut back to its last separator, without separators at the end."""
    prefix = os.path.commonprefix(names) if names else ""
    cut = max(prefix.rfind(c) for c in separators)
    return prefix[:cut].rstrip(separators) if cut > 0 else ""


def _name(g: ModelGraph, nodes: frozenset[int], fallback: str) -> str:
    """A name for people: the common scope of the nodes' names ("/model/layers.0"), else of the weights
    they read ("model.layers.0" in dynamo exports, whose node names have no scope), else the Add's name."""
    named = [g.nodes[n].name for n in sorted(nodes)]
    real = [n for n in named if not n.endswith(SPLIT_SUFFIXES)]  # not the Adds split out of fused norms
    scoped = _common_prefix(real or named, "/")
    if scoped.strip("/"):
        return scoped
    weights = sorted({t for n in nodes for t in g.nodes[n].inputs if t in g.initializer_names})
    paths = [w for w in weights if "." in w]  # module paths; dynamo names folded constants val_12
    weights = paths or weights
    return _common_prefix(weights, "/._") or fallback


def _unit(g: ModelGraph, blocks: tuple[Block, ...]) -> Unit:
    nodes = frozenset().union(*(b.nodes | {b.add} for b in blocks))
    last = g.nodes[blocks[-1].add]
    return Unit(blocks, _name(g, nodes, last.name), last.outputs[0])


def _pairs(g: ModelGraph, blocks: list[Block]) -> list[tuple[Block, Block]] | None:
    """(attention block, FFN block) per layer when every attention block is followed by an FFN block
    that reads its output (directly, or through a post-norm); None otherwise."""
    pairs, order = [], {b.add: i for i, b in enumerate(blocks)}
    for block in blocks:
        if not block.attention:
            continue
        after = order[block.add] + 1
        following = blocks[after] if after < len(blocks) else None
        if following is None or following.attention:
            return None
        out = g.nodes[block.add].outputs[0]
        reads = following.skip == out or g.producer.get(following.skip) in _descendants(g, out)
        if not reads:
            return None
        pairs.append((block, following))
    paired = {b.add for pair in pairs for b in pair}
    return pairs if pairs and len(paired) == len(blocks) else None


def units(g: ModelGraph, blocks: list[Block] | None = None) -> tuple[str, list[Unit]]:
    """("layer", attention+FFN pairs) for transformers whose blocks all pair up, else ("block", blocks)."""
    blocks = find_blocks(g) if blocks is None else blocks
    pairs = _pairs(g, blocks)
    if pairs is not None:
        return "layer", [_unit(g, pair) for pair in pairs]
    return "block", [_unit(g, (b,)) for b in blocks]
