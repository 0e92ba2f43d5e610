"""Ops that move, merge, split or select axes and elements without arithmetic.

Reshape and Flatten merge or split axes: a channel axis merged with others becomes a block (or a
stride) of the merged axis; an axis split into (outer, inner) ties to the outer part, except in a
channel shuffle, where the inner part is what every group keeps in step, and in a packed projection
picked apart (PyTorch's nn.MultiheadAttention: [.., 3E] -> [.., 3, E], then q, k, v = Gathers of
constant scalars on the 3-axis), where the outer part only selects and the inner part is the channel.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, identity, merged, rank


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


_PICK_THROUGH = ("Transpose", "Squeeze", "Unsqueeze")  # layout ops a selected axis may pass on its way


def _moved_axis(g, node, axis: int) -> int | None:
    """Where `axis` of a layout op's input lands in its output (None if it is dropped or unknown)."""
    x, y = node.inputs[0], node.outputs[0]
    if node.op == "Transpose":
        perm = list(node.attrs.get("perm", list(range(rank(g, x)))[::-1]))
        return perm.index(axis)
    sx, sy = g.shape(x), g.shape(y)
    if sx is None or sy is None or sx[axis] == 1:
        return None
    ins, outs = [a for a, d in enumerate(sx) if d != 1], [a for a, d in enumerate(sy) if d != 1]
    return outs[ins.index(axis)] if len(ins) == len(outs) else None


def _only_picked(g, tensor: str, axis: int, depth: int = 0) -> bool:
    """Every use of `tensor`'s `axis` is a Gather of one constant scalar index on it (through layout
    ops): the axis selects whole sub-tensors (packed q/k/v) and carries no channel of its own."""
    users = g.consumers.get(tensor, [])
    if not users or tensor in g.outputs or depth > 8:
        return False
    for i in users:
        user = g.nodes[i]
        if user.op == "Gather" and user.inputs[0] == tensor:
            index = g.const(user.inputs[1])
            if index is None or np.ndim(index) != 0 or int(user.attrs.get("axis", 0)) % rank(g, tensor) != axis:
                return False
        elif user.op in _PICK_THROUGH and user.inputs[0] == tensor:
            moved = _moved_axis(g, user, axis)
            if moved is None or not _only_picked(g, user.outputs[0], moved, depth + 1):
                return False
        else:
            return False
    return True


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
        if slot.tensor == y and len(members) == 2 and members[0] == parts[0] and _only_picked(g, y, slot.axis):
            raise Barrier(f"axis {slot.axis} picks packed projections apart (constant Gathers); it is no channel axis")
        return [merged(slot, Slot(other, axis), tuple(sizes[r] for r in members), members.index(parts[0]))]
    # my axis is split: tie it to its outer part (heads), or its inner part in a channel shuffle or when
    # the outer part only picks packed projections apart
    homes = [home(r) for r in parts]
    picked = len(homes) == 2 and slot.tensor == x and _only_picked(g, y, homes[0])
    pick = 1 if slot.tensor == x and (_is_shuffle(g, node, y, homes) or picked) else 0
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
    constant shape becomes a new constant; a computed one (TorchScript's Shape->Gather->Unsqueeze->
    Concat with the batch) gets the change added at run time, so its dynamic entries keep following
    the input, even when the export fixed the input's batch at 1 (the batch entry is then known, but
    folding it would pin an LSTM's initial state to batch 1: ddddocr's batch view needs it to follow).
    -1, 0 and broadcast 1 entries are left alone.
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
    if known.all() and ctx.g.is_const(name):
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
RULES = (ReshapeRule(), FlattenRule(), TransposeRule(), SqueezeRule(), ExpandRule(), ShapeRule())
