"""Ops that place or pick elements along an axis: Concat puts its inputs' channels at offsets of the
output, Split and Slice take ranges back out, Gather picks indices."""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Rule, Slot, attr_or_input_ints, dim, family, identity, indexed, norm_axis, offset, rank


class ConcatRule(Rule):
    ops = ("Concat",)

    def links(self, g, node, slot):
        y = node.outputs[0]
        r = rank(g, y)
        axis = norm_axis(int(node.attrs["axis"]), r)
        inputs = [t for t in node.inputs if t]
        if slot.axis != axis:
            return family([Slot(t, slot.axis) for t in inputs] + [Slot(y, slot.axis)], dim(g, y, slot.axis))
        links, start = [], 0
        for t in inputs:
            n = dim(g, t, axis)
            if n:
                links.append(offset(Slot(t, axis), Slot(y, axis), n, start))
            start += n
        return links


class SplitRule(Rule):
    ops = ("Split",)

    def links(self, g, node, slot):
        x = node.inputs[0]
        r = rank(g, x)
        axis = norm_axis(int(node.attrs.get("axis", 0)), r)
        outs = [t for t in node.outputs if t]
        if slot.tensor not in [x] + outs:
            raise Barrier("the split input carries no channels")
        if slot.axis != axis:
            return family([Slot(x, slot.axis)] + [Slot(t, slot.axis) for t in outs], dim(g, x, slot.axis))
        links, start = [], 0
        for t in node.outputs:
            n = dim(g, t, axis) if t else 0
            if t and n:
                links.append(offset(Slot(t, axis), Slot(x, axis), n, start))
            start += n
        return links

    def update(self, ctx, node):
        x = node.inputs[0]
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(ctx.g.shape(x)))
        sizes = np.array([ctx.new_dim(t, axis) for t in node.outputs], dtype=np.int64)
        old = np.array([ctx.old_dim(t, axis) for t in node.outputs], dtype=np.int64)
        if np.array_equal(sizes, old):
            return
        if "split" in node.attrs:
            ctx.set_attr(node, "split", sizes.tolist())
        elif node.input(1) is not None:
            ctx.set_input(node, 1, sizes)
        else:  # equal split (or num_outputs): spell the sizes out
            ctx.set_attr(node, "num_outputs", None)
            if ctx.g.opset >= 13:
                ctx.set_input(node, 1, sizes)
            else:
                ctx.set_attr(node, "split", sizes.tolist())


def _slice_entry(g, node, r: int, axis: int) -> tuple[int, int, int, int] | None:
    """(position in the parameter vectors, start, end, step) of the slice on `axis`, or None when
    the Slice leaves that axis alone. Only this axis's bounds must be static: other entries may
    follow run-time shapes (a sequence length) without freezing anything here."""
    if g.opset < 10:
        starts, ends = node.attrs.get("starts"), node.attrs.get("ends")
        axes = node.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
        known = [True] * len(starts)
    else:
        axes = attr_or_input_ints(g, node, "_", 3) if node.input(3) else None
        count = (g.shape(node.inputs[1]) or (0,))[0]
        axes = axes if axes is not None else list(range(count))
        values = [g.static_value(node.input(i)) for i in (1, 2, 4)]
        if values[0] is None or values[1] is None or (node.input(4) and values[2] is None):
            raise Barrier("its bounds are computed by ops the analysis cannot follow")
        starts, ends = (np.asarray(v[0]).reshape(-1) for v in values[:2])
        steps = np.asarray(values[2][0]).reshape(-1) if node.input(4) else np.ones(len(starts), np.int64)
        known = values[0][1].reshape(-1) & values[1][1].reshape(-1)
    axes = [norm_axis(int(a), r) for a in axes]
    if axis not in axes:
        return None
    k = axes.index(axis)
    if not known[k]:
        raise Barrier(f"its bounds on axis {axis} are computed from run-time values")
    return k, int(starts[k]), int(ends[k]), int(steps[k])


def _clamp_start(start: int, n: int) -> int:
    start = start + n if start < 0 else start
    return min(max(start, 0), n)


class SliceRule(Rule):
    ops = ("Slice",)

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor not in (x, y):
            raise Barrier("slice parameters carry no channels")
        entry = _slice_entry(g, node, rank(g, x), slot.axis)
        if entry is None:
            return [identity(Slot(x, slot.axis), Slot(y, slot.axis), dim(g, x, slot.axis))]
        _, start, _, step = entry
        if step != 1:
            raise Barrier("a strided slice of this axis is not mapped")
        n = dim(g, y, slot.axis)
        return [offset(Slot(y, slot.axis), Slot(x, slot.axis), n, _clamp_start(start, dim(g, x, slot.axis)))]

    def update(self, ctx, node):
        x, y = node.inputs[0], node.outputs[0]
        r = len(ctx.g.shape(x))
        deltas: dict[int, dict[int, int]] = {1: {}, 2: {}}  # input index -> {position: change}
        for a in range(r):
            kept = ctx.kept(x, a)
            entry = _slice_entry(ctx.g, node, r, a) if kept is not None else None
            if entry is None:
                continue
            if ctx.g.opset < 10:
                raise Barrier("Slice-1 with pruned axes is not rewritten")
            k, start, end, _ = entry
            old_dim = ctx.old_dim(x, a)
            clamped = _clamp_start(start, old_dim)
            new_start = int(np.searchsorted(kept, clamped))
            new_end = new_start + ctx.new_dim(y, a)
            deltas[1][k] = new_start - start
            if not (end >= old_dim and clamped + ctx.old_dim(y, a) == old_dim):  # "to the end" stays as it is
                deltas[2][k] = new_end - end
        for index, changes in deltas.items():
            changes = {k: d for k, d in changes.items() if d}
            if not changes:
                continue
            values, known = ctx.g.static_value(node.inputs[index])
            values = np.asarray(values).reshape(-1)
            delta = np.zeros_like(values)
            for k, d in changes.items():
                delta[k] = d
            if known.all():
                ctx.set_input(node, index, (values + delta).astype(values.dtype))
            else:
                ctx.add_to_input(node, index, delta.astype(values.dtype))


class GatherRule(Rule):
    ops = ("Gather",)

    def links(self, g, node, slot):
        x, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
        if slot.tensor == idx:
            raise Barrier("gather indices carry no channels")
        r = rank(g, x)
        axis = norm_axis(int(node.attrs.get("axis", 0)), r)
        ri = rank(g, idx)
        if slot.tensor == x:
            in_axis = slot.axis
        else:
            if axis <= slot.axis < axis + ri:
                in_axis = axis if ri == 1 else None
            else:
                in_axis = slot.axis if slot.axis < axis else slot.axis - ri + 1
            if in_axis is None:
                raise Barrier("axis comes from multi-dimensional gather indices")
        if in_axis != axis:
            out_axis = in_axis if in_axis < axis else in_axis + ri - 1
            return [identity(Slot(x, in_axis), Slot(y, out_axis), dim(g, x, in_axis))]
        indices = g.const(idx)
        if indices is None or ri != 1:
            raise Barrier("it picks channels with run-time or scalar indices")
        n = dim(g, x, axis)
        picked = np.where(indices < 0, indices + n, indices)
        return [indexed(Slot(y, axis), Slot(x, axis), np.arange(len(picked)), picked)]

    def update(self, ctx, node):
        x = node.inputs[0]
        axis = norm_axis(int(node.attrs.get("axis", 0)), len(ctx.g.shape(x)))
        kept_in = ctx.kept(x, axis)
        if kept_in is None:
            return
        indices = ctx.g.const(node.inputs[1])
        n = ctx.old_dim(x, axis)
        picked = np.where(indices < 0, indices + n, indices)
        kept_out = ctx.kept(node.outputs[0], axis)
        if kept_out is not None:
            picked = picked[kept_out]
        ctx.set_input(node, 1, np.searchsorted(kept_in, picked).astype(indices.dtype))


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (ConcatRule(), SplitRule(), SliceRule(), GatherRule())
