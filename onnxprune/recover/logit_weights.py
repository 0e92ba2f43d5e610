"""A weighted re-solve for the layers whose outputs are a sigmoid output's logits (`--recover sequential_logit`).

Sequential reconstruction fits every consumer by plain least squares on its dense output. For the last
linear layer before a graph output's Sigmoid (a detector's class convs) that output is a logit, and the
fit spends its capacity on the far-background cells that make up almost every row: there a logit error
of 1 moves the probability by ~1e-4, while at the cells near a decision threshold it flips detections
(docs/benchmarks.md, s13-nude: NudeNet's class-logit error is ~7x larger in the 0.05-0.5 band than over
all cells). Here each output column of such a layer is re-solved with its rows weighted by p (1 - p) of
the dense probability (the curvature of the Bernoulli KL between the dense and the pruned probability)
plus FLOOR (0: measured best on NudeNet, face-free calibration: 96.7 mean over 3 seeds against 95.6 at
1e-3 and 95.5 at 1e-2, 2 seeds each), so the fit is spent where flips happen.

Which columns are logits is found by value, not by op patterns: the dense model is run on one sample with
the layer outputs and every output Sigmoid's input fetched, and a column whose values all appear verbatim
among the Sigmoid's inputs reached it through ops that only move values (Reshape, Concat, Split, ...): a
YOLO head's class conv matches, its box conv (whose values go through a softmax) does not. A Softmax output
is left to the plain fit (its curvature couples the classes; not measured).
"""

from __future__ import annotations

import numpy as np

from onnxprune.recover.ridge_choice import best_multiple, products, solve

FLOOR = 0.0           # added to every row's weight (p (1 - p) peaks at 0.25); see the module doc
KEY = "logit_columns"  # Consumer.extra: mask over kept_out of the columns solved weighted
MAX_BYTES = 1 << 28   # per-column Grams past this (columns x features^2 x 8 B) are not kept: plain fit


def weights(logits: np.ndarray) -> np.ndarray:
    """p (1 - p) + FLOOR of each dense logit (elementwise)."""
    p = 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))
    return (p * (1 - p) + FLOOR).astype(np.float32)


def matching_columns(values: np.ndarray, axis: int, logits: np.ndarray) -> np.ndarray:
    """Mask over `values`' `axis`: columns (not all zero) whose every value occurs in `logits`."""
    cols = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    pool = np.unique(logits.ravel())
    return np.array([bool(np.any(c != 0)) and bool(np.isin(c, pool).all()) for c in cols], dtype=bool)


def mark(model, consumers, feed: dict[str, np.ndarray]) -> list[str]:
    """Set extra[KEY] on each `output` consumer whose kept columns include logits of an output Sigmoid
    (module doc), by one dense run on `feed`; returns the names of the layers marked."""
    import onnx

    from onnxprune.load.runtime import session
    from onnxprune.score.logit_outputs import squashed_nodes

    sigmoid_in = [model.graph.node[i].input[0] for i in squashed_nodes(model) if model.graph.node[i].op_type == "Sigmoid"]
    cands = [c for c in consumers if c.kind == "output"]
    if not sigmoid_in or not cands:
        return []
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    fetch = list(dict.fromkeys(sigmoid_in + [c.target for c in cands]))
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in fetch if t not in have)
    sess = session(probe, arena=False)  # one run: parks a large model's weights as any other session does
    got = dict(zip(fetch, sess.run(fetch, feed)))
    pool = np.concatenate([got[t].ravel() for t in sigmoid_in])
    marked = []
    for c in cands:
        y = got[c.target]
        axis = 1 if c.conv is not None or y.ndim == 2 else y.ndim - 1
        if "bias" in c.extra:  # a MatMul's Add: its target (and the logit) is the sum (sequential._rows)
            y = y + np.reshape(c.extra["bias"], [-1 if a == axis else 1 for a in range(y.ndim)]).astype(y.dtype)
        mask = matching_columns(y, axis, pool)[c.kept_out]
        if mask.any() and mask.sum() * (c.features + 1) ** 2 * 8 <= MAX_BYTES:
            c.extra[KEY] = mask
            marked.append(c.name)
    return marked


def add(extra: dict, feats: np.ndarray, target: np.ndarray, held: bool) -> None:
    """Add one batch's weighted sums for the marked columns: per column X^T W X, X^T W y and sum W."""
    cols = np.flatnonzero(extra[KEY])
    w = weights(target[:, cols])                                     # [rows, k]
    key = "logit_held" if held else "logit_fit"
    gram, cross, total = extra.get(key, (0.0, 0.0, 0.0))
    root = np.sqrt(w)
    grams = np.stack([products(feats * root[:, j:j + 1], feats[:, :1])[0] for j in range(len(cols))])  # [k, F, F]
    crosses = feats.T @ (w * target[:, cols])                                                     # [F, k]
    extra[key] = (gram + grams, cross + crosses, total + w.sum(0).astype(np.float64))


def resolve(extra: dict, theta: np.ndarray, lam: float, diag: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """theta with each marked column re-solved from its weighted sums (ridge chosen on the held-out
    weighted rows where there are any); the plain solution where a column has no weighted rows."""
    fit, held = extra.pop("logit_fit", None), extra.pop("logit_held", None)
    if fit is None:
        return theta
    out = theta.copy()
    def mean(gram, cross, total):  # weighted means: the ridge keeps its scale (rows of weight ~1e-3 sum below 1)
        return gram / total, cross / total, 1

    for j, col in enumerate(np.flatnonzero(extra[KEY])):
        train = (fit[0][j], fit[1][:, j:j + 1], fit[2][j])
        m = 1.0
        if held is not None and held[2][j] > 0:
            m = best_multiple(mean(*train), mean(held[0][j], held[1][:, j:j + 1], held[2][j]), lam, diag,
                              prior[:, col:col + 1])
            train = (train[0] + held[0][j], train[1] + held[1][:, j:j + 1], train[2] + held[2][j])
        sol = solve(*mean(*train), lam * m, diag, prior[:, col:col + 1])
        if np.all(np.isfinite(sol)):
            out[:, col] = sol[:, 0]
    return out
