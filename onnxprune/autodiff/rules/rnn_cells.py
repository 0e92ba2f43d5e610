"""The backward of one direction of an LSTM, GRU or RNN cell (used by rules/recurrent.py).

Every cell follows the same plan: recompute the gates for all T steps from X and the shifted hidden
states (h_{t-1} comes from the forward output Y), precompute per-step coefficient tensors, then walk
the steps backwards with only the truly sequential part (dh_t depends on step t+1 through R), and
finish with one GEMM per weight over all T*N rows. Shapes: x (T, N, I), hidden states (T, N, H),
per-step slices keep a leading axis of 1. Gate orders are ONNX's: LSTM i o f c, GRU z r h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from onnxprune.autodiff.context import GradContext


@dataclass
class Direction:
    """One direction's tensors, in processing order (time reversed for a reverse direction)."""
    x: str                      # (T, N, I)
    hs: str                     # (T, N, H): the hidden states the forward node output
    steps: int
    hidden: int
    inputs: int                 # I
    like: str                   # a float tensor of the right element type (for constants)
    w: str                      # (G*H, I)
    r: str                      # (G*H, H)
    b: str | None               # (2*G*H,): Wb then Rb
    h0: str | None              # (1, N, H)
    c0: str | None
    dy: str | None              # (T, N, H) gradient of Y for this direction
    dh_last: str | None         # (1, N, H) gradient of Y_h
    dc_last: str | None         # (1, N, H) gradient of Y_c (LSTM)
    activations: tuple[str, ...]
    linear_before_reset: int
    unflip: Callable[[str], str]  # back to the node's time order


@dataclass
class CellGrads:
    dx: str
    dw: str
    dr: str
    db: str
    dh0: str
    dc0: str | None = None


# activation -> its derivative written in terms of its output y
SLOPES: dict[str, Callable[[GradContext, str, str], str]] = {
    "Sigmoid": lambda ctx, y, one: ctx.emit("Mul", [y, ctx.emit("Sub", [one, y])]),
    "Tanh": lambda ctx, y, one: ctx.emit("Sub", [one, ctx.emit("Mul", [y, y])]),
    "Relu": lambda ctx, y, one: ctx.emit("CastLike", [ctx.emit("Greater", [y, ctx.emit("Sub", [one, one])]), y]),
}


class _Cell:
    """Shared plumbing for one direction: step slicing, None-aware sums, the input-side gradients."""

    def __init__(self, ctx: GradContext, d: Direction):
        self.ctx, self.d = ctx, d
        self.one = ctx.scalar(1.0, d.like)
        self.x2 = self.rows(d.x, d.inputs)
        self.hprev = self.concat([d.h0 or ctx.zeros_like(self.step0(d.hs)), self.head(d.hs)], 0)
        self.hprev2 = self.rows(self.hprev, d.hidden)
        self.dys = self.steps(d.dy) if d.dy else [None] * d.steps

    def emit(self, op: str, inputs, **attrs) -> str:
        return self.ctx.emit(op, inputs, **attrs)

    def rows(self, t: str, width: int) -> str:
        return self.emit("Reshape", [t, self.ctx.ints([-1, width])])

    def seq(self, t: str, width: int) -> str:
        return self.emit("Reshape", [t, self.ctx.ints([self.d.steps, -1, width])])

    def step0(self, t: str) -> str:
        return self.emit("Slice", [t, self.ctx.ints([0]), self.ctx.ints([1]), self.ctx.ints([0])])

    def head(self, t: str) -> str:
        """t[:-1] along time."""
        return self.emit("Slice", [t, self.ctx.ints([0]), self.ctx.ints([self.d.steps - 1]), self.ctx.ints([0])])

    def steps(self, t: str) -> list[str]:
        if self.d.steps == 1:
            return [t]
        return self.ctx.emit("Split", [t, self.ctx.ints([1] * self.d.steps)], outputs=self.d.steps, axis=0)

    def split(self, t: str, sizes: list[int], axis: int) -> list[str]:
        return self.ctx.emit("Split", [t, self.ctx.ints(sizes)], outputs=len(sizes), axis=axis)

    def concat(self, parts: list[str], axis: int) -> str:
        return parts[0] if len(parts) == 1 else self.emit("Concat", parts, axis=axis)

    def add(self, *terms: str | None) -> str | None:
        terms = [t for t in terms if t]
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else self.emit("Add" if len(terms) == 2 else "Sum", terms)

    def act(self, name: str, pre: str) -> str:
        return self.emit(name, [pre])

    def slope(self, name: str, y: str) -> str:
        return SLOPES[name](self.ctx, y, self.one)

    def gemm(self, a: str, b: str, c: str | None = None, **attrs) -> str:
        return self.emit("Gemm", [a, b] + ([c] if c else []), **attrs)

    def biases(self, gates: int) -> list[str | None]:
        """Wb and Rb, or Nones without B."""
        return self.split(self.d.b, [gates * self.d.hidden] * 2, 0) if self.d.b else [None, None]

    def start(self, t: int) -> tuple[str | None, bool]:
        """The gradient arriving at step t from the outputs alone; whether t is the last step."""
        last = t == self.d.steps - 1
        return self.add(self.dys[t], self.d.dh_last if last else None), last

    def input_side(self, dgx2: str) -> tuple[str, str, str]:
        """dX (T, N, I), dW and dWb from the gate gradients on the input side, rows (T*N, G*H)."""
        dx = self.seq(self.gemm(dgx2, self.d.w), self.d.inputs)
        dw = self.gemm(dgx2, self.x2, transA=1)
        return dx, dw, self.bias_grad(dgx2)

    def bias_grad(self, rows: str) -> str:
        return self.emit("ReduceSum", [rows, self.ctx.ints([0])], keepdims=0)


def lstm(ctx: GradContext, d: Direction) -> CellGrads:
    c = _Cell(ctx, d)
    H, T = d.hidden, d.steps
    fa, ga, ha = d.activations
    wb, rb = c.biases(4)
    bias = c.add(wb, rb)
    gates = c.seq(c.add(c.gemm(c.x2, d.w, bias, transB=1), c.gemm(c.hprev2, d.r, transB=1)), 4 * H)
    ip, op, fp, cp = c.split(gates, [H] * 4, 2)
    i, o, f, g = c.act(fa, ip), c.act(fa, op), c.act(fa, fp), c.act(ga, cp)
    igs, fs = c.steps(c.emit("Mul", [i, g])), c.steps(f)
    cs, prev = [], d.c0
    for t in range(T):  # the cell state is not an output: rebuild it (two element-wise ops a step)
        prev = igs[t] if prev is None else c.add(c.emit("Mul", [fs[t], prev]), igs[t])
        cs.append(prev)
    call = c.concat(cs, 0)
    cprev = c.concat([d.c0 or ctx.zeros_like(cs[0])] + cs[:-1], 0)
    hc = c.act(ha, call)
    a = c.steps(c.emit("Mul", [o, c.slope(ha, hc)]))  # dh -> dc
    k = c.steps(c.concat([c.emit("Mul", [g, c.slope(fa, i)]), c.emit("Mul", [hc, c.slope(fa, o)]),
                          c.emit("Mul", [cprev, c.slope(fa, f)]), c.emit("Mul", [i, c.slope(ga, g)])], 2))
    dgs: list[str] = [""] * T
    dcs: list[str] = [""] * T
    for t in reversed(range(T)):
        dh, last = c.start(t)
        if not last:
            dh = c.add(dh, c.emit("MatMul", [dgs[t + 1], d.r]))
        dh = dh or ctx.zeros_like(c.step0(d.hs))
        carried = d.dc_last if last else c.emit("Mul", [dcs[t + 1], fs[t + 1]])
        dcs[t] = c.add(c.emit("Mul", [dh, a[t]]), carried)
        dgs[t] = c.emit("Mul", [c.concat([dcs[t], dh, dcs[t], dcs[t]], 2), k[t]])
    dg2 = c.rows(c.concat(dgs, 0), 4 * H)
    dx, dw, dwb = c.input_side(dg2)
    return CellGrads(dx, dw, c.gemm(dg2, c.hprev2, transA=1), c.concat([dwb, dwb], 0),
                     c.emit("MatMul", [dgs[0], d.r]), c.emit("Mul", [dcs[0], fs[0]]))


def gru(ctx: GradContext, d: Direction) -> CellGrads:
    return (_gru_linear_before_reset if d.linear_before_reset else _gru_default)(_Cell(ctx, d))


def _gru_linear_before_reset(c: _Cell) -> CellGrads:
    # z = f(xz + hz), r = f(xr + hr), n = g(xn + r * hn), h = (1 - z) n + z h_prev, with hX = h_prev R^T + Rb
    d, H, T = c.d, c.d.hidden, c.d.steps
    fa, ga = d.activations
    wb, rb = c.biases(3)
    xz, xr, xn = c.split(c.seq(c.gemm(c.x2, d.w, wb, transB=1), 3 * H), [H] * 3, 2)
    hz, hr, hn = c.split(c.seq(c.gemm(c.hprev2, d.r, rb, transB=1), 3 * H), [H] * 3, 2)
    z, r = c.act(fa, c.add(xz, hz)), c.act(fa, c.add(xr, hr))
    n = c.act(ga, c.add(xn, c.emit("Mul", [r, hn])))
    kz = c.emit("Mul", [c.emit("Sub", [c.hprev, n]), c.slope(fa, z)])
    kn = c.emit("Mul", [c.emit("Sub", [c.one, z]), c.slope(ga, n)])
    kr = c.emit("Mul", [c.emit("Mul", [kn, hn]), c.slope(fa, r)])
    kh = c.steps(c.concat([kz, kr, c.emit("Mul", [kn, r])], 2))
    zs = c.steps(z)
    dhs: list[str] = [""] * T
    dghs: list[str] = [""] * T
    for t in reversed(range(T)):
        dh, last = c.start(t)
        if not last:
            dh = c.add(dh, c.emit("Mul", [dhs[t + 1], zs[t + 1]]), c.emit("MatMul", [dghs[t + 1], d.r]))
        dhs[t] = dh or c.ctx.zeros_like(c.step0(d.hs))
        dghs[t] = c.emit("Mul", [c.concat([dhs[t]] * 3, 2), kh[t]])
    dh_all = c.concat(dhs, 0)
    dgx = c.emit("Mul", [c.concat([dh_all] * 3, 2), c.concat([kz, kr, kn], 2)])
    dx, dw, dwb = c.input_side(c.rows(dgx, 3 * H))
    dgh2 = c.rows(c.concat(dghs, 0), 3 * H)
    dh0 = c.add(c.emit("Mul", [dhs[0], zs[0]]), c.emit("MatMul", [dghs[0], d.r]))
    return CellGrads(dx, dw, c.gemm(dgh2, c.hprev2, transA=1), c.concat([dwb, c.bias_grad(dgh2)], 0), dh0)


def _gru_default(c: _Cell) -> CellGrads:
    # z, r as above; n = g(xn + (r * h_prev) Rh^T + Rbh): the reset gate acts before the recurrent product
    d, H, T = c.d, c.d.hidden, c.d.steps
    fa, ga = d.activations
    wb, rb = c.biases(3)
    r_zr, r_h = c.split(d.r, [2 * H, H], 0)
    rb_zr, rb_h = c.split(rb, [2 * H, H], 0) if rb else (None, None)
    xz, xr, xn = c.split(c.seq(c.gemm(c.x2, d.w, wb, transB=1), 3 * H), [H] * 3, 2)
    hz, hr = c.split(c.seq(c.gemm(c.hprev2, r_zr, rb_zr, transB=1), 2 * H), [H] * 2, 2)
    z, r = c.act(fa, c.add(xz, hz)), c.act(fa, c.add(xr, hr))
    rh2 = c.rows(c.emit("Mul", [r, c.hprev]), H)
    n = c.act(ga, c.add(xn, c.seq(c.gemm(rh2, r_h, rb_h, transB=1), H)))
    kz = c.steps(c.emit("Mul", [c.emit("Sub", [c.hprev, n]), c.slope(fa, z)]))
    kn = c.steps(c.emit("Mul", [c.emit("Sub", [c.one, z]), c.slope(ga, n)]))
    kr = c.steps(c.emit("Mul", [c.hprev, c.slope(fa, r)]))
    zs, rs = c.steps(z), c.steps(r)
    dhs, dgzr, dnp, us = ([""] * T for _ in range(4))
    for t in reversed(range(T)):
        dh, last = c.start(t)
        if not last:
            dh = c.add(dh, c.emit("Mul", [dhs[t + 1], zs[t + 1]]), c.emit("MatMul", [dgzr[t + 1], r_zr]),
                       c.emit("Mul", [us[t + 1], rs[t + 1]]))
        dhs[t] = dh or c.ctx.zeros_like(c.step0(d.hs))
        dnp[t] = c.emit("Mul", [dhs[t], kn[t]])
        us[t] = c.emit("MatMul", [dnp[t], r_h])
        dgzr[t] = c.concat([c.emit("Mul", [dhs[t], kz[t]]), c.emit("Mul", [us[t], kr[t]])], 2)
    dgzr_all, dnp_all = c.concat(dgzr, 0), c.concat(dnp, 0)
    dx, dw, dwb = c.input_side(c.rows(c.concat([dgzr_all, dnp_all], 2), 3 * H))
    dr = c.concat([c.gemm(c.rows(dgzr_all, 2 * H), c.hprev2, transA=1), c.gemm(c.rows(dnp_all, H), rh2, transA=1)], 0)
    dh0 = c.add(c.emit("Mul", [dhs[0], zs[0]]), c.emit("MatMul", [dgzr[0], r_zr]), c.emit("Mul", [us[0], rs[0]]))
    return CellGrads(dx, dw, dr, c.concat([dwb, dwb], 0), dh0)  # every recurrent bias adds to a gate's input


def rnn(ctx: GradContext, d: Direction) -> CellGrads:
    # h_t = f(x W^T + h_{t-1} R^T + Wb + Rb)
    c = _Cell(ctx, d)
    (fa,) = d.activations
    k = c.steps(c.slope(fa, d.hs))
    dps: list[str] = [""] * d.steps
    for t in reversed(range(d.steps)):
        dh, last = c.start(t)
        if not last:
            dh = c.add(dh, c.emit("MatMul", [dps[t + 1], d.r]))
        dps[t] = c.emit("Mul", [dh or ctx.zeros_like(c.step0(d.hs)), k[t]])
    dp2 = c.rows(c.concat(dps, 0), d.hidden)
    dx, dw, dwb = c.input_side(dp2)
    return CellGrads(dx, dw, c.gemm(dp2, c.hprev2, transA=1), c.concat([dwb, dwb], 0), c.emit("MatMul", [dps[0], d.r]))
