"""LSTM, GRU and RNN: the input size always, the hidden size when removing a unit stays exact.

Weights are W [dirs, gates*H, I], R [dirs, gates*H, H], B [dirs, 2*gates*H], P [dirs, 3H]. Hidden
unit h owns row g*H + h of every gate g in W, R, B and P, column h of R, and index h of the outputs
and initial states; both directions share H, so one choice of units serves both.

Removing unit h is exact when a zeroed unit stays zero: with its weights and biases zeroed, its
gates sit at f(0) and its candidate at g(0); starting from a zero state it stays at zero only if the
candidate and output activations vanish at 0 (Tanh, Relu, ... do; Sigmoid, Softplus do not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.couple.vocabulary import Barrier, Link, Rule, Slot, dim, identity, indexed

VANISH_AT_ZERO = {"Tanh", "Relu", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "Softsign", "Elu"}


@dataclass(frozen=True)
class Cell:
    """What differs between LSTM, GRU and RNN: gate count, defaults, which inputs/outputs are states."""

    ops: tuple[str, ...]
    gates: int
    activations: tuple[str, ...]      # defaults for one direction
    state_activations: tuple[int, ...]  # positions (per direction) that must vanish at 0
    state_inputs: tuple[int, ...]       # initial_h (and initial_c)
    peephole: int | None                # input index of P (LSTM only)


# per layout: axes of X (time, batch, feature), Y (time, dirs, batch, hidden), states (dirs, batch, hidden)
_X_AXES = {0: (0, 1, 2), 1: (1, 0, 2)}
_Y_AXES = {0: (0, 1, 2, 3), 1: (1, 2, 0, 3)}
_STATE_AXES = {0: (0, 1, 2), 1: (1, 0, 2)}


class RecurrentRule(Rule):
    def __init__(self, cell: Cell):
        self.cell = cell
        self.ops = cell.ops

    def _families(self, g, node) -> dict[str, list[Link]]:
        cell = self.cell
        x, w, r = node.inputs[0], node.inputs[1], node.inputs[2]
        layout = int(node.attrs.get("layout", 0))
        xt, xb, xf = _X_AXES[layout]
        yt, _, yb, yh = _Y_AXES[layout]
        _, sb, sh = _STATE_AXES[layout]
        y = node.outputs[0] if node.outputs and node.outputs[0] else None
        states = [t for t in node.outputs[1:] if t] + [node.input(i) for i in cell.state_inputs if node.input(i)]
        hidden = int(node.attrs["hidden_size"])
        families: dict[str, list[Link]] = {"feature": [identity(Slot(x, xf), Slot(w, 2), dim(g, x, xf))]}

        time, batch = [], []
        if y is not None:
            time.append(identity(Slot(x, xt), Slot(y, yt), dim(g, x, xt)))
            batch.append(identity(Slot(x, xb), Slot(y, yb), dim(g, x, xb)))
        batch += [identity(Slot(x, xb), Slot(s, sb), dim(g, x, xb)) for s in states]
        if node.input(4):  # sequence_lens [batch]
            batch.append(identity(Slot(x, xb), Slot(node.inputs[4], 0), dim(g, x, xb)))
        families["time"], families["batch"] = time, batch

        unit = Slot(r, 2)  # R's input axis: one index per hidden unit, always present
        links = [identity(unit, Slot(s, sh), hidden) for s in states]
        if y is not None:
            links.append(identity(unit, Slot(y, yh), hidden))
        blocks = [(Slot(w, 1), cell.gates), (Slot(r, 1), cell.gates)]
        if node.input(3):
            blocks.append((Slot(node.inputs[3], 1), 2 * cell.gates))  # Wb then Rb
        if cell.peephole is not None and node.input(cell.peephole):
            blocks.append((Slot(node.inputs[cell.peephole], 1), 3))
        units = np.arange(hidden)
        for slot, count in blocks:
            links.append(indexed(unit, slot, np.tile(units, count), (np.arange(count)[:, None] * hidden + units).reshape(-1)))
        families["hidden"] = links
        return families

    def _check_exact(self, node) -> None:
        cell = self.cell
        acts = [a.decode() if isinstance(a, bytes) else a for a in node.attrs.get("activations", [])]
        per_direction = len(cell.activations)
        for k, name in enumerate(acts):
            if k % per_direction in cell.state_activations and name not in VANISH_AT_ZERO:
                raise Barrier(f"its activation {name} is not 0 at 0, so a removed hidden unit would not stay silent")

    def links(self, g, node, slot: Slot) -> list[Link]:
        families = self._families(g, node)
        for name, links in families.items():
            if any(slot in (link.a, link.b) for link in links):
                if name == "hidden":
                    self._check_exact(node)
                return links
        raise Barrier(f"{node.op} keeps its directions axis whole")

    def seeds(self, g, node) -> list[Slot]:
        layout = int(node.attrs.get("layout", 0))
        return [Slot(node.inputs[2], 2), Slot(node.inputs[0], _X_AXES[layout][2])]

    def update(self, ctx, node) -> None:
        hidden = ctx.new_dim(node.inputs[2], 2)
        if hidden != ctx.old_dim(node.inputs[2], 2):
            ctx.set_attr(node, "hidden_size", hidden)


# the rules this module contributes; couple/ops/__init__.py lists every module
RULES = (
    RecurrentRule(Cell(("LSTM",), 4, ("Sigmoid", "Tanh", "Tanh"), (1, 2), (5, 6), 7)),
    RecurrentRule(Cell(("GRU",), 3, ("Sigmoid", "Tanh"), (1,), (5,), None)),
    RecurrentRule(Cell(("RNN",), 1, ("Tanh",), (0,), (5,), None)),
)
