"""LSTM, GRU and RNN: backpropagation through time, unrolled over the static sequence length.

The forward node stays as it is (ONNX Runtime's fused recurrent kernel). The backward takes the
hidden states from its output Y, recomputes every gate for all time steps at once (one GEMM over
T*N rows, since h_{t-1} is known from Y), and leaves only what is truly sequential to the unrolled
loop: per step a few element-wise ops and one small MatMul with R. Weight gradients are then single
GEMMs over all steps. The same sequential part as a Loop body ran within 10% of the unrolled graph
in ONNX Runtime (tools/bench_unroll_vs_loop.py); unrolled keeps the training graph flat (no subgraph
for the analysis or ORT's memory planner), at the price of a graph tied to the sequence length seen
at build time, which training fixes anyway (one input shape per run).

Directions are handled in processing order (a reverse direction sees time reversed); the cell math
lives in rules/rnn_cells.py. Not supported (refused by name): sequence_lens, peepholes, clip,
input_forget, layout=1, activations other than Sigmoid/Tanh/Relu or with alpha/beta.
"""

from __future__ import annotations

import numpy as np

from onnxprune.autodiff.context import GradContext, attr
from onnxprune.autodiff.rule import RuleTable
from onnxprune.autodiff.rules import rnn_cells
from onnxprune.autodiff.rules.rnn_cells import Direction

GRADIENTS = RuleTable()

# per op: default activations of one direction, and the cell's backward
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
CELLS = {"LSTM": rnn_cells.lstm, "GRU": rnn_cells.gru, "RNN": rnn_cells.rnn}
UNSUPPORTED_INPUTS = {4: "sequence_lens", 7: "peepholes (P)"}
UNSUPPORTED_ATTRS = ("clip", "input_forget", "activation_alpha", "activation_beta")


def _directions(node) -> list[bool]:
    """One entry per direction: whether it runs backwards in time."""
    mode = attr(node, "direction", "forward")
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[mode]


def _activations(node) -> list[tuple[str, ...]]:
    default = DEFAULT_ACTIVATIONS[node.op]
    given = [a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations", []) or []]
    dirs = len(_directions(node))
    if not given:
        return [default] * dirs
    k = len(default)
    return [tuple(given[d * k:(d + 1) * k]) for d in range(dirs)]


def _check(ctx: GradContext, node) -> str | None:
    for slot, what in UNSUPPORTED_INPUTS.items():
        if node.input(slot):
            return f"{node.op} with {what} has no gradient rule"
    for name in UNSUPPORTED_ATTRS:
        if name in node.attrs and not (name == "input_forget" and not node.attrs[name]):
            return f"{node.op} with attribute {name} has no gradient rule"
    if int(attr(node, "layout", 0)):
        return f"{node.op} with layout=1 (batch first) has no gradient rule"
    for acts in _activations(node):
        bad = [a for a in acts if a not in rnn_cells.SLOPES]
        if bad:
            return f"{node.op} with activation {bad[0]} has no gradient rule"
    return None


def _slice(ctx: GradContext, tensor: str, axis: int, index: int) -> str:
    """tensor[index:index+1] along `axis` (keeps the axis)."""
    return ctx.emit("Slice", [tensor, ctx.ints([index]), ctx.ints([index + 1]), ctx.ints([axis])])


def _pick(ctx: GradContext, tensor: str, axis: int, index: int) -> str:
    """tensor[index] along `axis` (drops the axis)."""
    return ctx.emit("Gather", [tensor, ctx.const(np.asarray(index, dtype=np.int64), "index")], axis=axis)


def _reverse_time(ctx: GradContext, tensor: str, steps: int) -> str:
    return ctx.emit("Slice", [tensor, ctx.ints([steps - 1]), ctx.ints([-steps - 1]), ctx.ints([0]), ctx.ints([-1])])


def _direction(ctx: GradContext, node, dys: list, d: int, backwards: bool, y: str) -> Direction:
    """Direction d's tensors in processing order."""
    x, w, r = node.inputs[:3]
    b, h0 = node.input(3), node.input(5)
    c0 = node.input(6) if node.op == "LSTM" else None
    steps = ctx.shape(x)[0]
    flip = (lambda t: _reverse_time(ctx, t, steps)) if backwards else (lambda t: t)
    dy = dys[0]
    return Direction(
        x=flip(x), hs=flip(_pick(ctx, y, 1, d)), steps=steps, hidden=int(attr(node, "hidden_size")),
        inputs=ctx.shape(x)[-1], like=x,
        w=_pick(ctx, w, 0, d), r=_pick(ctx, r, 0, d), b=_pick(ctx, b, 0, d) if b else None,
        h0=_slice(ctx, h0, 0, d) if h0 else None, c0=_slice(ctx, c0, 0, d) if c0 else None,
        dy=flip(_pick(ctx, dy, 1, d)) if dy else None,
        dh_last=_slice(ctx, dys[1], 0, d) if len(dys) > 1 and dys[1] else None,
        dc_last=_slice(ctx, dys[2], 0, d) if len(dys) > 2 and dys[2] else None,
        activations=_activations(node)[d], linear_before_reset=int(attr(node, "linear_before_reset", 0)),
        unflip=flip)


def _stack(ctx: GradContext, parts: list[str]) -> str:
    """Per-direction gradients (each without the direction axis) -> one tensor with it."""
    ups = [ctx.emit("Unsqueeze", [p, ctx.ints([0])]) for p in parts]
    return ups[0] if len(ups) == 1 else ctx.emit("Concat", ups, axis=0)


@GRADIENTS.register(("LSTM", "GRU", "RNN"), inputs=(0, 1, 2, 3, 5, 6), check=_check, layer=True)
def recurrent(ctx, node, dys, needs):
    y = ctx.forward_output(node, 0)
    cell = CELLS[node.op]
    dirs = [_direction(ctx, node, dys, d, backwards, y) for d, backwards in enumerate(_directions(node))]
    results = [cell(ctx, dirn) for dirn in dirs]
    grads: list[str | None] = [None] * len(node.inputs)

    def want(slot: int) -> bool:
        return slot < len(needs) and needs[slot]

    if want(0):
        parts = [dirn.unflip(res.dx) for dirn, res in zip(dirs, results)]
        grads[0] = parts[0] if len(parts) == 1 else ctx.emit("Sum", parts)
    for slot, key in ((1, "dw"), (2, "dr"), (3, "db")):
        if want(slot):
            grads[slot] = _stack(ctx, [getattr(res, key) for res in results])
    for slot, key in ((5, "dh0"), (6, "dc0")):
        if want(slot):
            parts = [getattr(res, key) for res in results]  # each (1, N, H)
            grads[slot] = parts[0] if len(parts) == 1 else ctx.emit("Concat", parts, axis=0)
    return grads
