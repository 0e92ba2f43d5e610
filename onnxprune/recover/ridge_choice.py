"""The ridge of each sequential re-solve, chosen by its error on held-out calibration samples.

A fixed relative ridge (1e-2) lets a layer with few rows per feature fit its calibration samples
rather than the function: PP-OCRv4 det's squeeze-excitation convs see one row per image (32 rows for
96-312 features), and a detector's class convs see only what the calibration images hold. Every
HOLD_EVERY-th batch is kept out of the normal equations; each candidate ridge (multiples of the base,
up to one so strong that only the bias moves: plain removal with the mean shift corrected) is solved on
the rest and scored on the held-out rows; the best one is then solved on all rows. With a single batch
there is nothing to hold out and the base ridge is used, as before.
"""

from __future__ import annotations

import numpy as np

HOLD_EVERY = 4                                  # one batch in four is held out
MULTIPLES = (1.0, 10.0, 100.0, 1e3, 1e6)        # of the base ridge; 1e6 ~ the dense weights, bias refit


def held_out(batch: int) -> bool:
    return batch % HOLD_EVERY == HOLD_EVERY - 1


def products(feats: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """feats^T feats and feats^T target of one batch: float32 BLAS products, redone in float64 where they
    overflow (activations past ~1e17, as deep stacks of untrained weights give; a squared 1e20 is no
    float32). The finiteness check is O(F^2), small next to the O(rows F^2) product."""
    with np.errstate(over="ignore"):
        gram, cross = feats.T @ feats, feats.T @ target
    if not (np.isfinite(gram).all() and np.isfinite(cross).all()):
        wide = feats.astype(np.float64)
        gram, cross = wide.T @ wide, wide.T @ target.astype(np.float64)
    return gram, cross


def add_held(extra: dict, feats: np.ndarray, target: np.ndarray) -> None:
    """Add one held-out batch to the sums kept in a consumer's `extra["held"]`: [gram, cross, rows]."""
    gram, cross, rows = extra.get("held", (0.0, 0.0, 0))
    batch_gram, batch_cross = products(feats, target)
    extra["held"] = [gram + batch_gram, cross + batch_cross, rows + len(feats)]


def solve(gram: np.ndarray, cross: np.ndarray, rows: int, lam: float, diag: np.ndarray,
          prior: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """argmin ||X theta - Y||^2 / rows + lam ||D (theta - prior)||^2 from the normal equations.
    `overwrite` builds the system in `gram` and `cross` (a 5,735-feature Gram is 263 MB)."""
    a = np.divide(gram, max(rows, 1), out=gram if overwrite else None)
    a[np.diag_indices_from(a)] += lam * diag  # the same sums as adding lam * np.diag(diag), without the matrix
    rhs = np.divide(cross, max(rows, 1), out=cross if overwrite else None)
    rhs += lam * diag[:, None] * prior
    try:
        return np.linalg.solve(a, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, rhs, rcond=None)[0]


def best_multiple(train: tuple, held: tuple, lam: float, diag: np.ndarray, prior: np.ndarray) -> float:
    """The multiple of `lam` whose solution on `train` (gram, cross, rows) has the least squared error on
    `held` (gram, cross, rows); the target's own energy is the same for every candidate and left out."""
    g_ho, c_ho, n_ho = held
    best, best_err = 1.0, np.inf
    for m in MULTIPLES:
        theta = solve(*train, lam * m, diag, prior)
        if not np.all(np.isfinite(theta)):
            continue
        # tr(theta^T G theta) - 2 tr(theta^T C) with a BLAS product: a three-operand einsum loops in C (18x slower)
        err = (np.sum((g_ho @ theta) * theta) - 2 * np.sum(theta * c_ho)) / max(n_ho, 1)
        if err < best_err - 1e-12 * abs(best_err if np.isfinite(best_err) else 0):
            best, best_err = m, err
    return best
