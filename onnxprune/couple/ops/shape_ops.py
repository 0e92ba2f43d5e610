"""Ops that move, merge, split or select axes and elements without arithmetic.

Reshape and Flatten merge or split axes: a channel axis merged with others becomes a block (or a
stride) of the merged axis; an axis split into (outer, inner) ties to the outer part, except in a
channel shuffle, where the inner part is what every group keeps in step.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, attr_or_input_ints, dim, family, identity, indexed, merged, norm_axis, offset, rank


# ---- merging and splitting axes ------------------------------------------------------------------

def refine(si: tuple[int, ...], so: tuple[int, ...]) -> tuple[list[int], list[list[int]], list[list[int]]] | None:
    """The coarsest common refinement of two shapes of equal size, or None if there is none.

    Returns the refined sizes and, for each input and output axis, the refined axes it is made of
    (none for size-1 axes). [2048, 64] -> [512, 256] refines to [512, 4, 64]: input axis 1 is refined
    axis 2, output axis 2 is refined axes (1, 2).
    """
    ci, co = np.cumprod(si, dtype=np.int64).tolist(), np.cumprod(so, dtype=np.int64).tolist()
    if (ci[-1] if ci else 1) != (co[-1] if co else 1):
        return None
    bounds = sorted(set(ci) | set(co) | {1})
    if any(b % a for a, b in zip(bounds, bounds[1:])):
        return None
    sizes = [b // a for a, b in zip(bounds, bounds[1:])]
    position = {b: k for k, b in enumerate(bounds)}

    def parts(shape, cum):
        out, prev = [], 1
        for d, c in zip(shape, cum):
            out.append(list(range(position[prev], position[c])))
            prev = c
        return out

    return sizes, parts(si, ci), parts(so, co)


def _is_shuffle(g, node, y: str, axes: list[int]) -> bool:
    """A split into two axes that a consumer Transpose swaps: a channel shuffle."""
    if len(axes) != 2:
        return False
    for c in g.consumers.get(y, []):
        other = g.nodes[c]
        if other.op == "Transpose":
            perm = list(other.attrs.get("perm", []))
            if perm and perm.index(axes[0]) > perm.index(axes[1]):
                return True
    return False


def reshape_links(g, node, slot: Slot) -> list[Link]:
    """Links for a slot of a Reshape/Flatten/Squeeze-like op from the input and output shapes alone."""
    x, y = node.inputs[0], node.outputs[0]
    sx, sy = g.shape(x), g.shape(y)
    if sx is None or sy is None:
        raise Barrier("its shapes are unknown")
    refined = refine(sx, sy)
    if refined is None:
        raise Barrier(f"reshape {list(sx)} -> {list(sy)} has no axis-preserving map")
    sizes, in_parts, out_parts = refined
    mine, theirs, other = (in_parts, out_parts, y) if slot.tensor == x else (out_parts, in_parts, x)
    parts = mine[slot.axis]
    if not parts:
        raise Barrier(f"axis {slot.axis} has size 1")

    def home(r: int) -> int:
        return next(a for a, p in enumerate(theirs) if r in p)

    if len(parts) == 1:  # my axis is whole in the refinement: a part (or all) of one of their axes
        axis = home(parts[0])
        members = theirs[axis]
        if len(members) == 1:
            return [identity(slot, Slot(other, axis), sizes[parts[0]])]
        return [merged(slot, Slot(other, axis), tuple(sizes[r] for r in members), members.index(parts[0]))]
    # my axis is split: tie it to its outer part (heads), or its inner part in a channel shuffle
    homes = [home(r) for r in parts]
    pick = 1 if slot.tensor == x and _is_shuffle(g, node, y, homes) else 0
    axis = homes[pick]
    if theirs[axis] != [parts[pick]]:
        raise Barrier(f"reshape {list(sx)} -> {list(sy)} splits axis {slot.axis} across merged axes")
    return [merged(Slot(other, axis), slot, tuple(sizes[r] for r in parts), pick)]


class _PrunedView:
    """The graph as it will be after the rewrite: same nodes and constants, tensors at their new dims.

    Evaluating a computed shape on this view tells what it will produce at run time: entries read
    from Shape of a pruned tensor follow by themselves, constant entries keep their old value.
    """

    def __init__(self, ctx):
        self._ctx = ctx

    def __getattr__(self, name):
        return getattr(self._ctx.g, name)

    def shape(self, tensor: str):
        old = self._ctx.g.shape(tensor)
        return None if old is None else tuple(self._ctx.new_dim(tensor, a) for a in range(len(old)))


def write_shape_input(ctx, node, index: int, y: str) -> None:
    """Make the shape input of `node` produce the new dims of `y`, whether constant or computed.

    Entries that spelled out a changed dim and will not follow it by themselves are patched: a
    fully static shape becomes a new constant; a shape with dynamic entries (TorchScript's
    Shape->Gather->Unsqueeze->Concat with the batch) gets the change added at run time, so the
    dynamic entries keep following the input. -1, 0 and broadcast 1 entries are left alone.
    """
    from onnxprune.graph.static_values import static_value

    if ctx.g.shape(y) is None:
        return
    r = len(ctx.g.shape(y))
    if all(ctx.new_dim(y, a) == ctx.old_dim(y, a) for a in range(r)):
        return
    name = node.inputs[index]
    before, after = ctx.g.static_value(name), static_value(_PrunedView(ctx), name, {})
    if before is None or after is None:
        raise Barrier(f"the shape of '{y}' is computed by ops the rewrite cannot follow")
    old_values = np.asarray(before[0]).reshape(-1)
    values, known = np.asarray(after[0]).reshape(-1), np.asarray(after[1]).reshape(-1)
    target = values.copy()
    shift = r - len(values)  # Expand's shape may be shorter than the output: it aligns right
    for k in range(len(values)):
        old, new = ctx.old_dim(y, k + shift), ctx.new_dim(y, k + shift)
        if old_values[k] != old or values[k] == new:
            continue  # -1, 0 or a broadcast 1; or an entry that follows by itself
        if not known[k]:
            raise Barrier(f"entry {k} of the shape of '{y}' is computed from dynamic dims")
        target[k] = new
    if np.array_equal(target, values):
        return
    if known.all():
        ctx.set_input(node, index, target.astype(values.dtype))
    else:
        ctx.add_to_input(node, index, (target - values).astype(values.dtype))


class ReshapeRule(Rule):
    ops = ("Reshape",)

    def links(self, g, node, slot):
        if slot.tensor not in (node.inputs[0], node.outputs[0]):
            raise Barrier("the shape input carries no channels")
        if g.static_value(node.inputs[1]) is None:  # else the rewrite could not recompute it
            raise Barrier("its target shape is computed by ops the rewrite cannot evaluate")
        return reshape_links(g, node, slot)

    def update(self, ctx, node):
        write_shape_input(ctx, node, 1, node.outputs[0])


class FlattenRule(Rule):
    ops = ("Flatten",)

    def links(self, g, node, slot):
        return reshape_links(g, node, slot)


class TransposeRule(Rule):
    ops = ("Transpose",)

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        r = rank(g, x)
        perm = list(node.attrs.get("perm", list(range(r))[::-1]))
        in_axis = slot.axis if slot.tensor == x else perm[slot.axis]
        return [identity(Slot(x, in_axis), Slot(y, perm.index(in_axis)), dim(g, x, in_axis))]


class SqueezeRule(Rule):
    """Squeeze/Unsqueeze drop or insert size-1 axes; every other axis keeps its order."""

    ops = ("Squeeze", "Unsqueeze")

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        sx, sy = g.shape(x), g.shape(y)
        if sx is None or sy is None:
            raise Barrier("its shapes are unknown")
        ins = [a for a, d in enumerate(sx) if d != 1]
        outs = [a for a, d in enumerate(sy) if d != 1]
        if len(ins) != len(outs):
            raise Barrier("its axes cannot be matched")
        pairs = dict(zip(ins, outs)) if slot.tensor == x else dict(zip(outs, ins))
        if slot.axis not in pairs:
            raise Barrier(f"axis {slot.axis} has size 1")
        a, b = (slot.axis, pairs[slot.axis]) if slot.tensor == x else (pairs[slot.axis], slot.axis)
        return [identity(Slot(x, a), Slot(y, b), sx[a])]


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


class ExpandRule(Rule):
    """Expand/Tile: axes that are not broadcast or repeated pass through; their shape entries follow."""

    ops = ("Expand", "Tile")

    def links(self, g, node, slot):
        x, y = node.inputs[0], node.outputs[0]
        if slot.tensor not in (x, y):
            raise Barrier("the shape input carries no channels")
        rx, ry = rank(g, x), rank(g, y)
        in_axis = slot.axis if slot.tensor == x else slot.axis - (ry - rx)
        if slot.tensor == y and node.op == "Expand" and (in_axis < 0 or dim(g, x, in_axis) == 1):
            return self._broadcast(g, node, slot.axis, ry)
        if in_axis < 0 or dim(g, x, in_axis) != dim(g, y, in_axis + ry - rx):
            raise Barrier("this axis is broadcast or repeated")
        return [identity(Slot(x, in_axis), Slot(y, in_axis + ry - rx), dim(g, x, in_axis))]

    @staticmethod
    def _broadcast(g, node, axis: int, ry: int) -> list[Link]:
        """An axis Expand broadcasts from size 1 carries no data: only its shape entry must follow."""
        value = g.static_value(node.inputs[1])
        known = None if value is None else np.asarray(value[1]).reshape(-1)
        k = axis - (ry - (0 if known is None else len(known)))
        if known is None or k < 0 or not known[k]:
            raise Barrier("this axis is broadcast to a size computed at run time")
        return []

    def update(self, ctx, node):
        if node.op == "Expand":
            write_shape_input(ctx, node, 1, node.outputs[0])


class ShapeRule(Rule):
    """Shape and Size read dimensions at run time, so they follow any pruning by themselves."""

    ops = ("Shape", "Size")

    def links(self, g, node, slot):
        return []


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (ReshapeRule(), FlattenRule(), TransposeRule(), SqueezeRule(), ConcatRule(), SplitRule(), SliceRule(),
         GatherRule(), ExpandRule(), ShapeRule())
