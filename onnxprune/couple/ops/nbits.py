"""MatMulNBits (com.microsoft): Y = A @ dequantize(B)^T with B packed [N, k_blocks, blob] in blocks of
`block_size` along K, one scale (and zero point) per row and block.

Output rows go whole with their packed weights, scales, zero points and bias; input features go a
whole block at a time (the block's scale is shared). Nothing is re-quantized: the kept rows and
blocks keep their bytes. Attributes N and K are rewritten.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Rule, Slot, dim, identity, indexed, merged, rank

MS = "com.microsoft"


class MatMulNBitsRule(Rule):
    ops = ("MatMulNBits",)
    domain = MS
    attributes = frozenset({"K", "N", "bits", "block_size", "accuracy_level"})

    def _check(self, g, node) -> None:
        unknown = sorted(set(node.attrs) - self.attributes)
        if unknown:
            raise Barrier(f"attribute '{unknown[0]}' is not understood by the pruning rule")
        if len(node.inputs) > 6:
            raise Barrier(f"input 6 ('{node.inputs[6]}') is not understood by the pruning rule")

    def _rows(self, g, node) -> list:
        b, scales, zeros, bias = node.inputs[1], node.inputs[2], node.input(3), node.input(5)
        y = node.outputs[0]
        n = int(node.attrs["N"])
        links = [identity(Slot(y, rank(g, y) - 1), Slot(b, 0), n)]
        for t in [scales] + ([zeros] if zeros else []):
            if rank(g, t) == 2:
                links.append(identity(Slot(t, 0), Slot(b, 0), n))
            else:  # flat [N * per_row]
                links.append(merged(Slot(b, 0), Slot(t, 0), (n, dim(g, t, 0) // n), 0))
        if bias:
            links.append(identity(Slot(bias, 0), Slot(b, 0), n))
        return links

    def _blocks(self, g, node) -> list:
        a, b, scales, zeros = node.inputs[0], node.inputs[1], node.inputs[2], node.input(3)
        k, size, bits = int(node.attrs["K"]), int(node.attrs["block_size"]), int(node.attrs.get("bits", 4))
        if k % size:
            raise Barrier(f"K = {k} is not a whole number of blocks of {size}")
        if node.input(4):
            raise Barrier("g_idx reorders the input features")
        if rank(g, scales) != 2:
            raise Barrier("flat scales hold rows and blocks on one axis; only rows can be removed")
        if zeros and rank(g, zeros) != 2:
            raise Barrier("flat zero points hold rows and blocks on one axis; only rows can be removed")
        if zeros and g.dtypes.get(zeros) == 2 and bits != 8:  # uint8 zero points pack several blocks per byte
            raise Barrier(f"{bits}-bit zero points pack several blocks into one byte")
        c = np.arange(k)
        x = Slot(a, rank(g, a) - 1)
        links = [indexed(x, x, c, c - c % size), indexed(x, Slot(b, 1), c, c // size)]
        links += [identity(Slot(t, 1), Slot(b, 1), k // size) for t in [scales] + ([zeros] if zeros else [])]
        return links

    def links(self, g, node, slot):
        self._check(g, node)
        y = node.outputs[0]
        rows = self._rows(g, node)
        if slot in {s for link in rows for s in (link.a, link.b)}:
            return rows
        blocks = self._blocks(g, node)
        if slot in {s for link in blocks for s in (link.a, link.b)}:
            return blocks
        if slot.tensor in (node.inputs[0], y) and slot.axis < rank(g, y) - 1:
            return [identity(Slot(node.inputs[0], slot.axis), Slot(y, slot.axis), dim(g, y, slot.axis))]
        raise Barrier(f"MatMulNBits does not carry axis {slot.axis} of '{slot.tensor}'")

    def seeds(self, g, node):
        a, y = node.inputs[0], node.outputs[0]
        return [Slot(y, rank(g, y) - 1), Slot(a, rank(g, a) - 1)]

    def update(self, ctx, node):
        a, b = node.inputs[0], node.inputs[1]
        n, k = ctx.new_dim(b, 0), ctx.new_dim(a, rank(ctx.g, a) - 1)
        if n != int(node.attrs["N"]):
            ctx.set_attr(node, "N", n)
        if k != int(node.attrs["K"]):
            ctx.set_attr(node, "K", k)


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (MatMulNBitsRule(),)
