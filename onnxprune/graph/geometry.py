"""A decoder's shape as its config states it, read from the graph: layers, heads, KV heads, head size,
hidden and intermediate size per layer.

Layers are the residual units (residual.py: an attention block and its FFN block; fused Skip norms
split first). In a layer, heads come from the fused attention op (`num_heads`, `kv_num_heads`); the
head size from its query input's width (packed QKV: (heads + 2 KV heads) x head size). Without a fused
op, the attention block's output projection has heads x head size input rows, and its narrowest
projection reading the block's input has KV heads x head size columns; then `head_size` must be given.
The intermediate size is the input width of the FFN block's last projection; the hidden size the
residual stream's last dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxprune.graph.fused_residual import unfuse
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import Block, units

FUSED_ATTENTION = ("GroupQueryAttention", "MultiHeadAttention", "Attention")


@dataclass(frozen=True)
class Geometry:
    """Per-layer values (tuples, one entry per layer) and the residual stream's width."""

    hidden: int
    heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    head_size: tuple[int, ...]
    intermediate: tuple[int, ...]

    @property
    def layers(self) -> int:
        return len(self.heads)


def _projection(g: ModelGraph, node: int) -> tuple[int, int] | None:
    """(in, out) of a MatMul/Gemm reading a constant 2-D weight, else None."""
    n = g.nodes[node]
    if n.op not in ("MatMul", "Gemm") or len(n.inputs) < 2 or not g.is_const(n.inputs[1]):
        return None
    shape = g.shape(n.inputs[1])
    if shape is None or len(shape) != 2:
        return None
    return (shape[1], shape[0]) if n.op == "Gemm" and n.attrs.get("transB", 0) else (shape[0], shape[1])


def _tip(g: ModelGraph, block: Block) -> tuple[int, int] | None:
    """The (in, out) of the last projection of a block's branch (through a bias Add)."""
    node = g.producer.get(block.branch)
    for _ in range(3):
        if node is None:
            return None
        found = _projection(g, node)
        if found is not None:
            return found
        preds = [g.producer[t] for t in g.nodes[node].inputs if t in g.producer and g.producer[t] in block.nodes]
        node = preds[0] if len(preds) == 1 else None
    return None


def _attention(g: ModelGraph, block: Block, head_size: int | None) -> tuple[int, int, int]:
    fused = [g.nodes[n] for n in block.nodes if g.nodes[n].op in FUSED_ATTENTION]
    if fused:
        node = fused[0]
        heads = int(node.attrs.get("num_heads", 0))
        kv = int(node.attrs.get("kv_num_heads", heads)) or heads
        width = (g.shape(node.inputs[0]) or (0,))[-1]
        packed = node.op == "GroupQueryAttention" and not node.input(1)
        size = width // (heads + 2 * kv) if packed else width // heads
        if node.op == "Attention":  # input 0 is the hidden state; the packed weight's columns are 3 x heads x size
            size = (g.shape(node.inputs[1]) or (0, 0))[1] // (3 * heads)
        return heads, kv, size
    if not head_size:
        raise ValueError("the attention has no fused op: the head size must come from the config")
    tip = _tip(g, block)
    widths = [p[1] for n in block.nodes if (p := _projection(g, n)) is not None and g.producer.get(block.branch) != n]
    if tip is None or not widths:
        raise ValueError("no output projection found in an attention block")
    return tip[0] // head_size, min(widths) // head_size, head_size


def geometry(model: onnx.ModelProto, input_shapes=None, head_size: int | None = None) -> Geometry:
    """The decoder's geometry; ValueError (with the reason) when the layers cannot be read."""
    split, _ = unfuse(model)
    g = ModelGraph(split, input_shapes)
    kind, found = units(g)
    if kind != "layer" or not found:
        raise ValueError("no transformer layers (attention block + FFN block) found")
    heads, kv, sizes, inter = [], [], [], []
    for unit in found:
        h, k, s = _attention(g, unit.blocks[0], head_size)
        ffn = _tip(g, unit.blocks[1])
        if ffn is None:
            raise ValueError(f"{unit.name}: no FFN output projection found")
        heads.append(h)
        kv.append(k)
        sizes.append(s)
        inter.append(ffn[0])
    hidden = (g.shape(found[0].skip) or (0,))[-1]
    return Geometry(hidden, tuple(heads), tuple(kv), tuple(sizes), tuple(inter))
