"""Solving one sequential-reconstruction consumer and writing its weights back (sequential.py).

The normal equations (or, with fewer rows than features, the kept rows: few_rows.py) give theta, the
ridge solution pulled toward the dense weights; `output` solves write it as the kept block of the weight,
`channel` solves fold the input map x_d ~ A^T x_p + b into the weight and bias.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.couple.vocabulary import LinearSite
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.recover import few_rows, logit_weights
from onnxprune.recover.ridge_choice import best_multiple, solve

if TYPE_CHECKING:  # pragma: no cover
    from onnxprune.recover.sequential import Consumer

log = logging.getLogger("onnxprune")

RECURRENT = {"LSTM": (2, 4), "GRU": (2, 3)}  # op -> (contracted axis of W, gates)


def solve_consumer(g: ModelGraph, c: Consumer, overrides: dict[str, np.ndarray], ridge: float) -> None:
    """Solve `c` from its sums (freed after) and put its new weight and bias in `overrides`."""
    held = c.extra.pop("held", None)  # batch 0 is never held out: a held sum comes with a gram
    store = c.extra.pop("few", None)  # fewer rows than features: solved in the rows' space (few_rows.py)
    if c.gram is None and (store is None or store.count == 0):
        return
    site = c.site
    weight = overrides.get(site.weight, g.const(site.weight))  # as stored: a float64 copy only where needed
    bias = g.const(site.bias) if site.bias is not None else None
    if store is not None:
        x, y = store.rows(held=False)
        f = x.shape[1] - (1 if c.intercept else 0)
        prior = _prior(c, weight, bias, f, y.shape[1])
        lam = _ridge(c, f, ridge, float(np.sum(x[:, :f] ** 2)), len(x))
        if len(x) < store.count:  # held-out rows choose the ridge
            lam *= few_rows.best_multiple(store, lam, prior, c.intercept)
        theta = few_rows.solve(*store.rows(), lam, prior, c.intercept)
    else:
        f = c.gram.shape[0] - (1 if c.intercept else 0)
        prior = _prior(c, weight, bias, f, c.cross.shape[1])
        lam = _ridge(c, f, ridge, float(np.trace(c.gram[:f, :f])), c.rows)
        diag = np.r_[np.ones(f), np.zeros(1 if c.intercept else 0)]  # the bias is not pulled anywhere
        if held is not None:  # the ridge with the least error on the held-out rows, then solved on all rows
            lam *= best_multiple((c.gram, c.cross, c.rows), tuple(held), lam, diag, prior)
            c.gram, c.cross, c.rows = (a + b for a, b in zip((c.gram, c.cross, c.rows), held))
        theta = solve(c.gram, c.cross, c.rows, lam, diag, prior, overwrite=True)  # the sums are not needed after
        if logit_weights.KEY in c.extra:  # an output Sigmoid's logit columns, fit weighted (logit_weights.py)
            theta = logit_weights.resolve(c.extra, theta, lam, diag, prior)
    c.gram = c.cross = prior = None
    if not np.all(np.isfinite(theta)):
        log.warning("reconstruction of %s gave non-finite weights; its channels are only removed", c.name)
        return
    if c.kind == "output":
        _write_output(g, c, theta, weight, overrides, f)
    else:
        _write_channel(g, c, theta, weight, overrides, f)


def _ridge(c: Consumer, f: int, ridge: float, trace: float, rows: int) -> float:
    """The base ridge: `ridge` times the mean squared feature (`trace` of the Gram over `rows`)."""
    scale = max(trace / max(rows, 1) / max(f, 1), 1e-12)
    if rows < f + (1 if c.intercept else 0):
        log.warning("layer %s: %d calibration rows for %d features; ridge fallback (pulled toward the "
                    "dense weights)", c.name, rows, f)
        return max(ridge, 0.1) * scale
    return ridge * scale


def _prior(c: Consumer, weight: np.ndarray, bias: np.ndarray | None, f: int, m: int) -> np.ndarray:
    """The solution with no compensation (`m` targets): dense weights of the kept inputs (channel
    solve: x_d = x_p)."""
    if c.kind == "channel":
        p = np.zeros((f + (1 if c.intercept else 0), m))
        p[np.arange(len(c.kept_in)), c.kept_in] = 1.0
        return p
    w = _out_in(c.site, weight)[np.ix_(c.kept_out, c.kept_in)]      # [M, C, taps...]
    p = w.reshape(len(c.kept_out), -1).T.astype(np.float64)         # [F, M]
    if c.intercept:
        b = bias[c.kept_out] if bias is not None else np.zeros(len(c.kept_out))
        p = np.concatenate([p, b[None].astype(np.float64)], axis=0)
    return p


def _out_in(site: LinearSite, weight: np.ndarray) -> np.ndarray:
    """The weight viewed as [out, in, taps...]."""
    return np.moveaxis(weight, (site.weight_out_axis, site.weight_axis), (0, 1))


def _from_out_in(site: LinearSite, view: np.ndarray) -> np.ndarray:
    return np.moveaxis(view, (0, 1), (site.weight_out_axis, site.weight_axis))


def _write_output(g: ModelGraph, c: Consumer, theta: np.ndarray, weight: np.ndarray, overrides, f: int) -> None:
    site = c.site
    view = np.array(_out_in(site, weight), dtype=g.const(site.weight).dtype)  # a copy in the stored type
    shape = (len(c.kept_out), len(c.kept_in)) + view.shape[2:]
    view[np.ix_(c.kept_out, c.kept_in)] = theta[:f].T.reshape(shape)  # rounded as a float64 copy's astype rounds
    overrides[site.weight] = np.ascontiguousarray(_from_out_in(site, view))
    if c.intercept:
        bias = overrides.get(site.bias, g.const(site.bias)).astype(np.float64).copy()
        bias[c.kept_out] = theta[f]
        overrides[site.bias] = bias.astype(g.const(site.bias).dtype)


def _write_channel(g: ModelGraph, c: Consumer, theta: np.ndarray, weight: np.ndarray, overrides, f: int) -> None:
    """x_d ~ A^T x_p + b folded in: W'[:, k] = sum_c W[:, c] A[k, c]; bias += sum over taps of W b."""
    site = c.site
    a = theta[:f]                                                   # [kept, C_in]
    view = _out_in(site, weight).astype(np.float64)                 # [out, in, taps...]
    dense = view.copy()
    view[:, c.kept_in] = np.tensordot(dense, a, axes=([1], [1])).transpose(0, -1, *range(1, dense.ndim - 1)) \
        if dense.ndim > 2 else dense @ a.T
    overrides[site.weight] = _from_out_in(site, view).astype(g.const(site.weight).dtype)
    if c.intercept:
        delta = np.tensordot(dense, theta[f], axes=([1], [0]))       # [out, taps...]
        bias = overrides.get(site.bias, g.const(site.bias)).astype(np.float64).copy()
        if g.nodes[c.node].op in RECURRENT:  # delta is [gates*H, dirs]; B is [dirs, 2*gates*H], Wb first
            bias[:, :delta.shape[0]] += delta.T
        else:
            bias += delta.reshape(delta.shape[0], -1).sum(1)
        overrides[site.bias] = bias.astype(g.const(site.bias).dtype)
