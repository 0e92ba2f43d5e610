"""Gemm and MatMul: the contracted axis ties the two operands, the free axes pass to the output."""

from __future__ import annotations

from onnxprune.couple.vocabulary import Barrier, LinearSite, Link, Rule, Slot, dim, family, rank
from onnxprune.graph.static_tensors import is_static


def _family_of(slot: Slot, families: list[list[Slot]], g, node) -> list[Link]:
    for members in families:
        if slot in members:
            return family(members, dim(g, slot.tensor, slot.axis))
    raise Barrier(f"{node.op} does not carry axis {slot.axis} of '{slot.tensor}'")


class GemmRule(Rule):
    ops = ("Gemm",)

    def links(self, g, node, slot):
        a, b, c, y = node.input(0), node.input(1), node.input(2), node.outputs[0]
        ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        m_axis, k_axis = (1, 0) if ta else (0, 1)
        kb_axis, n_axis = (1, 0) if tb else (0, 1)
        rows = [Slot(a, m_axis), Slot(y, 0)]
        cols = [Slot(b, n_axis), Slot(y, 1)]
        if c is not None:
            c_rank = rank(g, c)
            n = dim(g, y, 1)
            if c_rank >= 1 and dim(g, c, c_rank - 1) == n and n > 1:
                cols.append(Slot(c, c_rank - 1))
            if c_rank == 2 and dim(g, c, 0) == dim(g, y, 0) and dim(g, y, 0) > 1:
                rows.append(Slot(c, 0))
        return _family_of(slot, [rows, cols, [Slot(a, k_axis), Slot(b, kb_axis)]], g, node)

    def linear_site(self, g, node) -> LinearSite | None:
        if not g.is_const(node.inputs[1]) or float(node.attrs.get("alpha", 1.0)) != 1.0:
            return None
        c = node.input(2)
        if c is not None and (not g.is_const(c) or float(node.attrs.get("beta", 1.0)) != 1.0 or g.const(c).ndim > 1):
            return None
        ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
        return LinearSite(node.inputs[0], 0 if ta else 1, node.inputs[1], 1 if tb else 0, 0 if tb else 1, c, 2)

    def seeds(self, g, node):
        ta = int(node.attrs.get("transA", 0))
        return [Slot(node.outputs[0], 1), Slot(node.inputs[0], 0 if ta else 1)]


class MatMulRule(Rule):
    """Y[..., m, n] = sum_k A[..., m, k] B[..., k, n], batch axes broadcast from the right."""

    ops = ("MatMul",)

    def links(self, g, node, slot):
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        ra, rb, ry = rank(g, a), rank(g, b), rank(g, y)
        if ra < 2 or rb < 2:
            raise Barrier("MatMul with a 1-D operand is not mapped")
        families = [[Slot(a, ra - 1), Slot(b, rb - 2)], [Slot(a, ra - 2), Slot(y, ry - 2)],
                    [Slot(b, rb - 1), Slot(y, ry - 1)]]
        for k in range(1, ry - 1):  # batch axes, counted from the right
            members = [Slot(y, ry - 2 - k)]
            for t, r in ((a, ra), (b, rb)):
                axis = r - 2 - k
                if axis >= 0 and dim(g, t, axis) == dim(g, y, ry - 2 - k):
                    members.append(Slot(t, axis))
            families.append(members)
        return _family_of(slot, families, g, node)

    def linear_site(self, g, node) -> LinearSite | None:
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        if not g.is_const(b) or rank(g, b) != 2:
            return None
        bias = None
        consumers = g.consumers.get(y, [])
        if len(consumers) == 1 and g.nodes[consumers[0]].op == "Add":  # x @ W + b, the usual linear layer
            other = [t for t in g.nodes[consumers[0]].inputs if t != y]
            if other and g.is_const(other[0]) and g.const(other[0]).shape == (g.const(b).shape[1],):
                bias = other[0]
        return LinearSite(a, rank(g, a) - 1, b, 0, 1, bias, None)

    def seeds(self, g, node):
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        if is_static(g, b) and rank(g, b) == 2:  # x @ W: hidden units of a linear layer
            return [Slot(y, rank(g, y) - 1), Slot(a, rank(g, a) - 1)]
        if is_static(g, a) and rank(g, a) == 2:
            return [Slot(y, rank(g, y) - 2), Slot(b, rank(g, b) - 2)]
        return []


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    GemmRule(),
    MatMulRule(),
)
