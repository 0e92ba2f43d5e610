"""ONNX Runtime's fused attention ops (com.microsoft): a whole head is one channel.

A fused op reads its heads as blocks of a hidden axis (head h is elements [h*size, (h+1)*size)) or
as an axis of their own (a KV cache [B, N, T, H]). A head goes everywhere at once: its query, key
and value columns, its bias entries, its cache rows and its output block, so head_size never
changes and only the head counts do. In grouped-query attention a KV head and the query heads that
share it are one channel. `update` rewrites num_heads (and kv_num_heads, qkv_hidden_sizes).

An attribute or input a rule does not know is a barrier with that reason, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, family, indexed, rank

MS = "com.microsoft"


@dataclass(frozen=True)
class Heads:
    """`count` heads of `size` elements along `slot`, the first at index `start`; `share` consecutive
    heads make one channel (the query heads that read one KV head)."""

    slot: Slot
    count: int
    size: int
    start: int = 0
    share: int = 1


def head_links(anchor: Heads, parts: list[Heads]) -> list[Link]:
    """Tie each channel's elements in every part to the first element of that channel in `anchor`,
    and the anchor's elements to the first of their block: a channel is kept or removed whole."""
    block = anchor.size * anchor.share
    c = np.arange(anchor.start, anchor.start + anchor.count * anchor.size)
    links = [indexed(anchor.slot, anchor.slot, c, c - (c - anchor.start) % block)]
    for part in parts:
        e = np.arange(part.start, part.start + part.count * part.size)
        channel = (e - part.start) // part.size // part.share
        links.append(indexed(part.slot, anchor.slot, e, anchor.start + channel * block))
    return links


def _per_head(g, tensor: str | None, axis: int, count: int, share: int = 1) -> list[Heads]:
    """A per-head axis (cache, attention bias) when present and not broadcast."""
    if tensor is None or g.shape(tensor) is None or rank(g, tensor) <= axis or dim(g, tensor, axis) != count:
        return []
    return [Heads(Slot(tensor, axis), count, 1, share=share)]


def _count(total: int, heads: int, what: str) -> int:
    if heads <= 0 or total % heads:
        raise Barrier(f"{what} of {total} is not a multiple of {heads} heads")
    return total // heads


class FusedHeadsRule(Rule):
    """Shared by the fused attention ops: `layout` gives the anchor (the output's heads), the other
    head-carrying axes, and the axes contracted with a weight (which pass as one family)."""

    domain = MS
    attributes: frozenset[str] = frozenset()
    max_inputs = 0

    def layout(self, g, node) -> tuple[Heads, list[Heads], list[list[Slot]]]:
        raise NotImplementedError

    def _known(self, node) -> None:
        unknown = sorted(set(node.attrs) - self.attributes)
        if unknown:
            raise Barrier(f"attribute '{unknown[0]}' is not understood by the pruning rule")
        extra = [t for t in node.inputs[self.max_inputs:] if t]
        if extra:
            raise Barrier(f"input {node.inputs.index(extra[0])} ('{extra[0]}') is not understood by the pruning rule")

    def links(self, g, node, slot):
        self._known(node)
        anchor, parts, contracted = self.layout(g, node)
        if slot in {h.slot for h in [anchor] + parts}:
            return head_links(anchor, parts)
        for members in contracted:
            if slot in members:
                return family(members, dim(g, slot.tensor, slot.axis))
        raise Barrier(f"{node.op} does not carry axis {slot.axis} of '{slot.tensor}'")

    def seeds(self, g, node):
        try:
            self._known(node)
            anchor, _, contracted = self.layout(g, node)
        except Barrier:
            return []
        return [anchor.slot] + [members[0] for members in contracted]

    def new_heads(self, ctx, node) -> int:
        """The head count after the rewrite, read off the anchor (the output)."""
        out = node.outputs[0]
        axis = rank(ctx.g, out) - 1
        old = int(node.attrs["num_heads"])
        return ctx.new_dim(out, axis) // (ctx.old_dim(out, axis) // old)

    def update(self, ctx, node):
        n = self.new_heads(ctx, node)
        if n != int(node.attrs["num_heads"]):
            ctx.set_attr(node, "num_heads", n)


class AttentionRule(FusedHeadsRule):
    """Attention(input, weights [In, Dq+Dk+Dv], bias, mask_index, past, attention_bias, ...): the
    packed QKV projection and the attention; heads are blocks of each section of the weights."""

    ops = ("Attention",)
    attributes = frozenset({"num_heads", "qkv_hidden_sizes", "unidirectional", "mask_filter_value", "scale",
                            "do_rotary", "rotary_embedding_dim", "past_present_share_buffer"})
    max_inputs = 7

    def _sizes(self, g, node) -> list[int]:
        if "qkv_hidden_sizes" in node.attrs:
            return [int(v) for v in node.attrs["qkv_hidden_sizes"]]
        total = dim(g, node.inputs[1], 1)
        return [total // 3] * 3

    def layout(self, g, node):
        x, weights, bias = node.inputs[0], node.inputs[1], node.input(2)
        n = int(node.attrs["num_heads"])
        dq, dk, dv = self._sizes(g, node)
        hq, hv = _count(dq, n, "the query width"), _count(dv, n, "the value width")
        if dk != dq:
            raise Barrier("query and key widths differ")
        anchor = Heads(Slot(node.outputs[0], 2), n, hv)
        parts = []
        for t in [weights] + ([bias] if bias else []):
            axis = rank(g, t) - 1
            parts += [Heads(Slot(t, axis), n, hq), Heads(Slot(t, axis), n, hq, start=dq),
                      Heads(Slot(t, axis), n, hv, start=dq + dk)]
        parts += _per_head(g, node.input(4), 2, n) + _per_head(g, node.input(5), 1, n)
        if len(node.outputs) > 1 and node.outputs[1]:
            parts += _per_head(g, node.outputs[1], 2, n)
        return anchor, parts, [[Slot(x, rank(g, x) - 1), Slot(weights, 0)]]

    def update(self, ctx, node):
        n, old = self.new_heads(ctx, node), int(node.attrs["num_heads"])
        if n == old:
            return
        ctx.set_attr(node, "num_heads", n)
        if "qkv_hidden_sizes" in node.attrs:
            ctx.set_attr(node, "qkv_hidden_sizes", [int(v) // old * n for v in node.attrs["qkv_hidden_sizes"]])


class MultiHeadAttentionRule(FusedHeadsRule):
    """MultiHeadAttention(query [B,S,D], key, value, bias [D+D+Dv], key_padding_mask, attention_bias,
    past_key, past_value, ...): key and value as [B,L,D] or per head [B,N,L,H]; packed QKV is not mapped."""

    ops = ("MultiHeadAttention",)
    attributes = frozenset({"num_heads", "mask_filter_value", "scale", "unidirectional"})
    max_inputs = 8

    def layout(self, g, node):
        q, k, v, bias = node.inputs[0], node.input(1), node.input(2), node.input(3)
        n = int(node.attrs["num_heads"])
        if rank(g, q) != 3 or k is None or v is None or rank(g, k) not in (3, 4) or rank(g, v) != rank(g, k):
            raise Barrier("packed QKV or KV layouts are not mapped")
        dq = dim(g, q, 2)
        hq = _count(dq, n, "the query width")
        if rank(g, k) == 3:
            dk, dv = dim(g, k, 2), dim(g, v, 2)
            kv = [Heads(Slot(k, 2), n, _count(dk, n, "the key width")),
                  Heads(Slot(v, 2), n, _count(dv, n, "the value width"))]
        else:
            dk, dv = n * dim(g, k, 3), n * dim(g, v, 3)
            kv = _per_head(g, k, 1, n) + _per_head(g, v, 1, n)
        hv = dv // n
        parts = [Heads(Slot(q, 2), n, hq)] + kv
        if bias is not None:
            parts += [Heads(Slot(bias, 0), n, hq), Heads(Slot(bias, 0), n, dk // n, start=dq),
                      Heads(Slot(bias, 0), n, hv, start=dq + dk)]
        for t in [node.input(5), node.input(6), node.input(7)] + [o or None for o in node.outputs[1:4]]:
            parts += _per_head(g, t, 1, n)  # attention bias, past and present key/value, qk
        return Heads(Slot(node.outputs[0], 2), n, hv), parts, []


class GroupQueryAttentionRule(FusedHeadsRule):
    """GroupQueryAttention(query, key, value, past_key, past_value, seqlens_k, total_sequence_length,
    cos_cache, sin_cache, ...): query heads q*G..(q+1)*G-1 read KV head q (G = num_heads / kv_num_heads),
    so a KV head and its G query heads are one channel; query, key and value may come packed in one
    tensor (key and value absent), as ONNX Runtime GenAI's builder writes them."""

    ops = ("GroupQueryAttention",)
    attributes = frozenset({"num_heads", "kv_num_heads", "do_rotary", "rotary_interleaved", "scale", "softcap",
                            "local_window_size", "smooth_softmax"})
    max_inputs = 11

    def layout(self, g, node):
        q, k, v = node.inputs[0], node.input(1), node.input(2)
        n, kv = int(node.attrs["num_heads"]), int(node.attrs["kv_num_heads"])
        share = _count(n, kv, "num_heads")
        if k is None:  # packed [B, S, (N + 2 KV) * H]
            h = _count(dim(g, q, 2), n + 2 * kv, "the packed QKV width")
            parts = [Heads(Slot(q, 2), n, h, share=share), Heads(Slot(q, 2), kv, h, start=n * h),
                     Heads(Slot(q, 2), kv, h, start=(n + kv) * h)]
        else:
            h = _count(dim(g, q, 2), n, "the query width")
            if dim(g, k, 2) != kv * h or v is None or dim(g, v, 2) != kv * h:
                raise Barrier("key or value widths do not match kv_num_heads")
            parts = [Heads(Slot(q, 2), n, h, share=share), Heads(Slot(k, 2), kv, h), Heads(Slot(v, 2), kv, h)]
        parts += _per_head(g, node.input(3), 1, kv) + _per_head(g, node.input(4), 1, kv)
        parts += _per_head(g, node.input(10), 1, n, share)
        for out in node.outputs[1:3]:
            parts += _per_head(g, out or None, 1, kv)
        return Heads(Slot(node.outputs[0], 2), n, h, share=share), parts, []

    def update(self, ctx, node):
        n, old = self.new_heads(ctx, node), int(node.attrs["num_heads"])
        if n != old:
            share = old // int(node.attrs["kv_num_heads"])
            ctx.set_attr(node, "num_heads", n)
            ctx.set_attr(node, "kv_num_heads", n // share)


class RotaryEmbeddingRule(Rule):
    """RotaryEmbedding(input, position_ids, cos_cache, sin_cache): rotates pairs within each head, so
    heads pass through whole ([B,S,N*H] blocks or the N axis of [B,N,S,H]); the head axis is fixed."""

    ops = ("RotaryEmbedding",)
    domain = MS
    attributes = frozenset({"interleaved", "is_packed_batching", "num_heads", "rotary_embedding_dim", "scale"})

    def links(self, g, node, slot):
        unknown = sorted(set(node.attrs) - self.attributes)
        if unknown:
            raise Barrier(f"attribute '{unknown[0]}' is not understood by the pruning rule")
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor not in (x, y):
            raise Barrier("position ids and cos/sin caches carry no heads")
        r = rank(g, x)
        if r == 4 and slot.axis == 1:
            return family([Slot(x, 1), Slot(y, 1)], dim(g, x, 1))
        if r != 3 or slot.axis != 2:
            raise Barrier(f"axis {slot.axis} is rotated within a head")
        width, heads = dim(g, x, 2), int(node.attrs.get("num_heads", 0))
        size = width // heads if heads else 2 * dim(g, node.inputs[2], 1)
        n = _count(width, size, "the hidden width")
        return head_links(Heads(Slot(y, 2), n, size), [Heads(Slot(x, 2), n, size)])

    def update(self, ctx, node):
        heads = int(node.attrs.get("num_heads", 0))
        x = node.inputs[0]
        if heads and rank(ctx.g, x) == 3 and ctx.new_dim(x, 2) != ctx.old_dim(x, 2):
            ctx.set_attr(node, "num_heads", ctx.new_dim(x, 2) // (ctx.old_dim(x, 2) // heads))


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (AttentionRule(), MultiHeadAttentionRule(), GroupQueryAttentionRule(), RotaryEmbeddingRule())
