"""Gemm, MatMul and Einsum: products with the transposed other operand, broadcast batch axes summed."""

from __future__ import annotations

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable

GRADIENTS = RuleTable()


@GRADIENTS.register("Gemm", layer=True)
def gemm(ctx, node, dys, needs):
    # Y = alpha * A' B' + beta * C with A' = A^T if transA, B' = B^T if transB
    a, b = node.inputs[:2]
    c = node.input(2)
    dy = dys[0]
    alpha, beta = float(attr(node, "alpha", 1.0)), float(attr(node, "beta", 1.0))
    ta, tb = int(attr(node, "transA", 0)), int(attr(node, "transB", 0))
    scale = alpha if alpha != 1.0 else None
    da = db = dc = None
    if needs[0]:
        if ta:  # dA = alpha * B' dY^T
            da = ctx.emit("Gemm", [b, dy], alpha=scale, transA=tb, transB=1)
        else:  # dA = alpha * dY B'^T
            da = ctx.emit("Gemm", [dy, b], alpha=scale, transB=1 - tb)
    if needs[1]:
        if tb:  # dB = alpha * dY^T A'
            db = ctx.emit("Gemm", [dy, a], alpha=scale, transA=1, transB=ta)
        else:  # dB = alpha * A'^T dY
            db = ctx.emit("Gemm", [a, dy], alpha=scale, transA=1 - ta)
    if c and len(needs) > 2 and needs[2]:
        dc = ctx.sum_to(dy, ctx.shape(node.outputs[0]), c)
        if beta != 1.0:
            dc = ctx.emit("Mul", [dc, ctx.scalar(beta, c)])
    return [da, db, dc][:len(node.inputs)]


@GRADIENTS.register("MatMul", layer=True)
def matmul(ctx, node, dys, needs):
    a, b = node.inputs
    dy = dys[0]
    sa, sb, sy = ctx.shape(a), ctx.shape(b), ctx.shape(node.outputs[0])
    if len(sa) == 1 and len(sb) == 1:  # a dot product
        return [ctx.emit("Mul", [dy, b]) if needs[0] else None, ctx.emit("Mul", [dy, a]) if needs[1] else None]
    # numpy promotes a 1-D operand to a matrix and drops that axis from the result; do the same
    a2, sa2, b2, sb2, dy2, sy2 = a, sa, b, sb, dy, sy
    if len(sa) == 1:
        a2, sa2 = ctx.emit("Unsqueeze", [a, ctx.ints([0])]), (1,) + sa
        dy2, sy2 = ctx.emit("Unsqueeze", [dy, ctx.ints([-2])]), sy[:-1] + (1,) + sy[-1:]
    if len(sb) == 1:
        b2, sb2 = ctx.emit("Unsqueeze", [b, ctx.ints([-1])]), sb + (1,)
        dy2, sy2 = ctx.emit("Unsqueeze", [dy, ctx.ints([-1])]), sy + (1,)
    da = _lhs_grad(ctx, dy2, b2, sy2, sa2, sb2, a) if needs[0] else None
    db = _rhs_grad(ctx, a2, dy2, sy2, sa2, sb2, b) if needs[1] else None
    if da is not None and len(sa) == 1:
        da = ctx.emit("Reshape", [da, ctx.ints(sa)])
    if db is not None and len(sb) == 1:
        db = ctx.emit("Reshape", [db, ctx.ints(sb)])
    return [da, db]


def _lhs_grad(ctx: GradContext, dy, b, sy, sa, sb, a_name) -> str:
    if len(sy) == 2 and len(sb) == 2:
        return ctx.emit("Gemm", [dy, b], transB=1)
    full = ctx.emit("MatMul", [dy, ctx.transpose_last2(b, len(sb))])
    return _sum_to_shape(ctx, full, sy[:-2] + sa[-2:], sa, a_name)


def _rhs_grad(ctx: GradContext, a, dy, sy, sa, sb, b_name) -> str:
    if len(sb) == 2:
        if len(sa) == 2:
            return ctx.emit("Gemm", [a, dy], transA=1)
        # a 2-D weight under batched activations: one GEMM over all rows, no batched sum afterwards
        rows_a = ctx.emit("Reshape", [a, ctx.ints([-1, sa[-1]])])
        rows_dy = ctx.emit("Reshape", [dy, ctx.ints([-1, sy[-1]])])
        return ctx.emit("Gemm", [rows_a, rows_dy], transA=1)
    full = ctx.emit("MatMul", [ctx.transpose_last2(a, len(sa)), dy])
    return _sum_to_shape(ctx, full, sy[:-2] + sb[-2:], sb, b_name)


def _sum_to_shape(ctx: GradContext, grad, grad_shape, target_shape, target_name) -> str:
    """sum_to for a promoted operand whose shape is `target_shape` (not necessarily the tensor's own)."""
    if tuple(target_shape) == tuple(ctx.shape(target_name)):
        return ctx.sum_to(grad, grad_shape, target_name)
    lead = len(grad_shape) - len(target_shape)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(target_shape) if d == 1 and grad_shape[lead + i] != 1]
    if not axes:
        return grad
    return ctx.emit("Reshape", [ctx.emit("ReduceSum", [grad, ctx.ints(axes)], keepdims=1), ctx.ints(target_shape)])


def _tokens(term: str) -> list[str]:
    """'b...ij' -> ['b', '...', 'i', 'j']."""
    head, dots, tail = term.partition("...")
    return list(head) + ([dots] if dots else []) + list(tail)


def _einsum_terms(node) -> tuple[list[str], str]:
    """Operand subscripts and the output subscript (made explicit for an implicit equation)."""
    eq = attr(node, "equation").replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:
        letters = lhs.replace("...", "").replace(",", "")
        rhs = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, rhs


def _ellipsis_dims(shape: tuple[int, ...], term: str) -> tuple[int, ...]:
    tokens = _tokens(term)
    if "..." not in tokens:
        return ()
    before = tokens.index("...")
    return tuple(shape[before:len(shape) - (len(tokens) - before - 1)])


def _check_einsum(ctx, node) -> str | None:
    terms, out = _einsum_terms(node)
    for term in terms + [out]:
        letters = term.replace("...", "")
        if len(set(letters)) != len(letters):
            return "Einsum with an index repeated in one operand (a diagonal) has no gradient rule"
    ell = _ellipsis_dims(ctx.shape(node.outputs[0]), out)
    for name, term in zip(node.inputs, terms):
        if "..." in term and ("..." not in out or _ellipsis_dims(ctx.shape(name), term) != ell):
            return "Einsum whose '...' axes are broadcast or summed has no gradient rule"
    return None


@GRADIENTS.register("Einsum", check=_check_einsum, layer=True)
def einsum(ctx, node, dys, needs):
    # dA for 'A,B->Y' is einsum('Y,B->A'); an index only A has (summed away) comes back as a broadcast
    terms, out = _einsum_terms(node)
    grads = []
    for k, (operand, term) in enumerate(zip(node.inputs, terms)):
        if not needs[k]:
            grads.append(None)
            continue
        others = [(t, name) for j, (name, t) in enumerate(zip(node.inputs, terms)) if j != k]
        present = set(out) | set("".join(t for t, _ in others))
        tokens = _tokens(term)
        kept = [c for c in tokens if c == "..." or c in present]
        equation = ",".join([out] + [t for t, _ in others]) + "->" + "".join(kept)
        grad = ctx.emit("Einsum", [dys[0]] + [name for _, name in others], equation=equation)
        if len(kept) != len(tokens):
            ell = len(_ellipsis_dims(ctx.shape(operand), term))
            axes, pos = [], 0
            for c in tokens:
                if c not in kept:
                    axes.append(pos)
                pos += ell if c == "..." else 1
            grad = ctx.emit("Expand", [ctx.emit("Unsqueeze", [grad, ctx.ints(axes)]), ctx.shape_of(operand)])
        grads.append(grad)
    return grads
