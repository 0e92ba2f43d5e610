"""Layers that see fewer calibration rows than they have features, solved in the rows' space.

A classifier's Gemm sees one row per image: with 32 images and 4,096 features, the normal equations
hold a 4,096 x 4,096 float64 Gram (134 MB, copied again by each ridge candidate's solve) for a system of
rank 32. The ridge solution sequential.py wants,

    argmin ||X w + 1 b - Y||^2 / n + lam ||w - P||^2     (the bias b is not penalised)

is, with the bias taken out by centring (b = mean(Y) - mean(X) w) and the push-through identity,

    w = P + Xc^T (Xc Xc^T + n lam I)^-1 (Yc - Xc P),

an n x n solve. A layer's rows are kept as they come (`RowStore`) while there are fewer of them than
features; once there are as many, they are handed back to be summed into the Gram as before, batch by
batch in the order they came, so layers with enough rows are solved exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxprune.recover.ridge_choice import MULTIPLES


@dataclass
class RowStore:
    """The (features, targets, held out) batches of one consumer, while they are fewer than features."""

    features: int
    batches: list[tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=list)
    count: int = 0

    def add(self, feats: np.ndarray, target: np.ndarray, held: bool) -> bool:
        """Keep the batch; False (nothing kept) once the rows would reach the number of features."""
        if self.count + len(feats) >= self.features:
            return False
        self.batches.append((feats, target, held))
        self.count += len(feats)
        return True

    def rows(self, held: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stacked float64 (features, targets) of the training batches, the held-out ones, or all (None)."""
        picked = [(x, y) for x, y, h in self.batches if held is None or h == held]
        if not picked:
            return np.zeros((0, self.features)), np.zeros((0, self.batches[0][1].shape[1]))
        return (np.concatenate([x for x, _ in picked]).astype(np.float64),
                np.concatenate([y for _, y in picked]).astype(np.float64))


def solve(x: np.ndarray, y: np.ndarray, lam: float, prior: np.ndarray, intercept: bool) -> np.ndarray:
    """The ridge solution [w; b] of `x` [n, F(+1)] -> `y` [n, M] pulled toward `prior` [F(+1), M], as
    ridge_choice.solve gives it from the normal equations; x's last column is the ones of the bias."""
    f = x.shape[1] - (1 if intercept else 0)
    xs, p = x[:, :f], prior[:f]
    x_mean = xs.mean(0) if intercept else np.zeros(f)
    y_mean = y.mean(0) if intercept else np.zeros(y.shape[1])
    xc, yc = xs - x_mean, y - y_mean
    kernel = xc @ xc.T
    kernel[np.diag_indices_from(kernel)] += len(x) * lam
    residual = yc - xc @ p
    try:
        alpha = np.linalg.solve(kernel, residual)
    except np.linalg.LinAlgError:
        alpha = np.linalg.lstsq(kernel, residual, rcond=None)[0]
    w = p + xc.T @ alpha
    return np.vstack([w, (y_mean - x_mean @ w)[None]]) if intercept else w


def best_multiple(store: RowStore, lam: float, prior: np.ndarray, intercept: bool) -> float:
    """The multiple of `lam` whose solution on the training rows has the least squared error on the
    held-out rows (ridge_choice.best_multiple, in the rows' space)."""
    (x, y), (xh, yh) = store.rows(held=False), store.rows(held=True)
    best, best_err = 1.0, np.inf
    for m in MULTIPLES:
        theta = solve(x, y, lam * m, prior, intercept)
        if not np.all(np.isfinite(theta)):
            continue
        err = float(np.sum((xh @ theta - yh) ** 2))
        if err < best_err - 1e-12 * abs(best_err if np.isfinite(best_err) else 0):
            best, best_err = m, err
    return best
