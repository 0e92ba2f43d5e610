"""Conv and ConvTranspose: filters, biases and grouped/depthwise channel maps."""

from __future__ import annotations

import numpy as np

from onnxprune.couple.vocabulary import Barrier, LinearSite, Link, Rule, Slot, dim, identity, indexed, merged
from onnxprune.graph.static_tensors import is_static


class ConvRule(Rule):
    """Y[:, o] is produced by filter o; input channel i feeds the filters of its group.

    Dense (group 1): X channels tie to W's input axis. Depthwise-like (one input channel per group):
    input channel i owns its group's block of outputs. Grouped (k > 1 inputs per group): every group
    must keep the same positions, so position p is tied across groups on both sides.
    """

    ops = ("Conv", "ConvTranspose")

    def links(self, g, node, slot: Slot) -> list[Link]:
        x, w, b, y = node.input(0), node.input(1), node.input(2), node.outputs[0]
        if not is_static(g, w):  # an initializer, or a QDQ weight (DequantizeLinear of one)
            raise Barrier(f"its weight '{w}' is computed at run time")
        if slot.axis == 0 and slot.tensor in (x, y):
            return [identity(Slot(x, 0), Slot(y, 0), dim(g, y, 0))]
        # W is [C_out, C_in/group, ...] for Conv and [C_in, C_out/group, ...] for ConvTranspose
        w_out, w_in = (1, 0) if node.op == "ConvTranspose" else (0, 1)
        group = int(node.attrs.get("group", 1))
        cin, cout = dim(g, x, 1), dim(g, y, 1)
        k_in, k_out = cin // group, cout // group
        links = []
        if b is not None:
            links.append(identity(Slot(b, 0), Slot(y, 1), cout))
        if group == 1:
            links.append(identity(Slot(w, w_out), Slot(y, 1), cout))
            links.append(identity(Slot(w, w_in), Slot(x, 1), cin))
        elif k_in == 1:  # depthwise-like: input channel i owns output block i
            links.append(merged(Slot(x, 1), Slot(y, 1), (cin, k_out), 0))
            links.append(identity(Slot(w, 0), Slot(x if w_in == 0 else y, 1), cin if w_in == 0 else cout))
        else:  # grouped: a position is kept or removed in every group at once
            links.append(indexed(Slot(x, 1), Slot(w, w_in), np.arange(cin),
                                 np.arange(cin) % k_in if w_in == 1 else np.arange(cin)))
            links.append(indexed(Slot(y, 1), Slot(w, w_out), np.arange(cout),
                                 np.arange(cout) % k_out if w_out == 1 else np.arange(cout)))
            links.append(indexed(Slot(x, 1), Slot(x, 1), np.arange(cin), np.arange(cin) % k_in))
            links.append(indexed(Slot(y, 1), Slot(y, 1), np.arange(cout), np.arange(cout) % k_out))
        touched = {s for link in links for s in (link.a, link.b)}
        if slot not in touched:
            raise Barrier(f"{node.op} mixes axis {slot.axis} of '{slot.tensor}' spatially")
        return links

    def linear_site(self, g, node) -> LinearSite | None:
        if int(node.attrs.get("group", 1)) != 1 or not g.is_const(node.input(1)):
            return None  # grouped inputs are tied to outputs: nothing to re-solve
        w_out, w_in = (1, 0) if node.op == "ConvTranspose" else (0, 1)
        return LinearSite(node.inputs[0], 1, node.inputs[1], w_in, w_out, node.input(2), 2)

    def seeds(self, g, node) -> list[Slot]:
        return [Slot(node.outputs[0], 1), Slot(node.inputs[0], 1)]

    def update(self, ctx, node) -> None:
        group = int(node.attrs.get("group", 1))
        x = node.inputs[0]
        old_cin = ctx.old_dim(x, 1)
        if group > 1 and old_cin // group == 1:  # depthwise-like: one group per kept input channel
            ctx.set_attr(node, "group", ctx.new_dim(x, 1))


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    ConvRule(),
)
