"""fisher_measured: fisher_joint's orders, with each group's damage curve corrected by the measured
output change.

fisher_joint's damage is first order: a channel whose removal barely moves the outputs alone (a box
branch behind a softmax over bins, where the change is spread) can move them far once many go, which
no linear model of the outputs sees. For each group, the channels are removed along fisher_joint's
order at a few shares (their weight slices zeroed at every linear consumer, the rest of the model
dense) and the outputs compared with the dense ones on a few calibration samples, in fisher's own
units: sum over output elements of (change / the element's row std)^2, which is what E[s^2] estimates
to first order. Between measured shares the ratio of measured to first-order cumulative damage is
interpolated and the marginal scores scaled by it, so scores stay one quantity across groups.

One session serves every trial: the consumers' weights are also graph inputs, fed zeroed per trial.
Groups whose consumers are not initializers keep their first-order scores.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxprune.couple.dependency import Dependency
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion
from onnxprune.score.fisher import _row_std, _rows, _sites, fisher_scores
from onnxprune.score.joint import group_orders, monotone_scores, probe_rows
from onnxprune.score.memo import LastModel

SHARES = (0.25, 0.5, 0.75)   # shares of a group removed for a measurement
SAMPLES = 8                  # calibration samples per measurement


def _overridable(model: onnx.ModelProto, weights: set[str]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of `model` whose initializers in `weights` are also graph inputs (fed to override them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {i.name for i in out.graph.input}
    values = {}
    for init in out.graph.initializer:
        if init.name in weights and init.name not in present:
            out.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
            values[init.name] = onnx.numpy_helper.to_array(init)
    return out, values


class _Trials:
    """Output damage of removing channel sets, in fisher's units, on a few samples."""

    def __init__(self, dep: Dependency, data, samples: int = SAMPLES):
        from onnxprune.load.runtime import session
        sites, _ = _sites(dep)
        model, self.values = _overridable(dep.graph.model, {w for _, w, _ in sites})
        self.sites = [(slot, w, axis) for slot, w, axis in sites if w in self.values]
        self.dep, self.names = dep, [o.name for o in model.graph.output]
        self.stds, _ = _row_std(session(dep.graph.model), data, self.names)
        sub = data.take(min(samples, len(data)))
        self.feeds = [{k: np.asarray(v[i]) for k, v in sub.inputs.items()} for i in range(len(sub))]
        self.sess = session(model)
        self.dense = [self.sess.run(self.names, feed) for feed in self.feeds]

    def group_sites(self, channels: np.ndarray) -> list:
        return [s for s in self.sites if np.isin(self.dep.elements(s[0]), channels).any()]

    def damage(self, sites: list, removed: np.ndarray) -> float:
        return float(self.row_damage(sites, removed).sum())

    def row_damage(self, sites: list, removed: np.ndarray) -> np.ndarray:
        """Per output row (index along axis 1 of each float output, outputs concatenated): the mean over
        samples of the sum of (change / row std)^2."""
        weights: dict[str, np.ndarray] = {}
        for slot, w, axis in sites:
            hit = np.isin(self.dep.elements(slot), removed)
            if hit.any():
                arr = weights.setdefault(w, self.values[w].copy())
                index = [slice(None)] * arr.ndim
                index[axis] = np.flatnonzero(hit)
                arr[tuple(index)] = 0
        total = 0.0
        for feed, dense in zip(self.feeds, self.dense):
            outs = self.sess.run(self.names, {**feed, **weights})
            parts = [_rows(_standardised(np.asarray(o, np.float64) - d, self.stds[name]) ** 2).sum(1)
                     for name, d, o in zip(self.names, dense, outs) if np.issubdtype(np.asarray(d).dtype, np.floating)]
            total = total + np.concatenate(parts)
        return total / max(len(self.feeds), 1)


def _standardised(diff: np.ndarray, std: np.ndarray) -> np.ndarray:
    if diff.ndim >= 2:
        return diff / std.reshape((1, -1) + (1,) * (diff.ndim - 2))
    return diff / std


def corrected(marginal: np.ndarray, points: list[tuple[int, float]]) -> np.ndarray:
    """Marginals scaled so that their cumulative sum meets the measured (count removed, damage) points,
    the ratio of measured to first-order damage interpolated linearly in the count between them."""
    first = np.cumsum(np.maximum(marginal, 0.0))
    ks = np.array([k for k, _ in points], float)
    ratios = np.array([d / max(first[k - 1], 1e-30) for k, d in points])
    cum = first * np.interp(np.arange(1, len(first) + 1), ks, ratios)
    return np.diff(np.concatenate([[0.0], cum]))


def measured_scores(dep: Dependency, data, rows: np.ndarray, shares=SHARES, samples: int = SAMPLES,
                    balanced: bool = False) -> np.ndarray:
    """Scores from fisher_joint's orders and marginals, corrected by measured damage. `balanced`: each
    output row's damage divided by its mean over all trials first (every row counts alike, however
    its std compares with how far cuts move it: box coordinates that vary with the anchor position)."""
    trials = _Trials(dep, data, samples)
    found, measured = [], []
    for grp, order, marginal in group_orders(dep, rows):
        sites = trials.group_sites(order)
        counts = sorted({min(max(int(round(s * len(order))), 1), len(order)) for s in shares})
        trial = [(k, trials.row_damage(sites, order[:k])) for k in counts] if sites and len(order) > 1 else []
        found.append((grp, order, marginal, trial))
        measured.extend(d for _, d in trial)
    weight = np.ones(len(measured[0])) if measured else None
    if balanced and measured:
        typical = np.mean(measured, 0)
        weight = 1.0 / np.maximum(typical, 1e-12 * max(float(typical.max()), 1e-30)) * typical.sum() / len(typical)
    ordered = {}
    for grp, order, marginal, trial in found:
        if trial:
            marginal = corrected(marginal, [(k, float(d @ weight)) for k, d in trial])
        ordered[grp.id] = (order, marginal)
    return monotone_scores(dep, ordered)


_LAST = LastModel()  # one model's scores, reused across plans


def _measured(balanced: bool):
    def score(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
        try:
            rows = probe_rows(dep, data, seed=seed)
        except Exception:  # noqa: BLE001  (no gradients: fisher's own fallback, with its warning)
            if data is None:
                raise
            return fisher_scores(dep, data, seed=seed, stats=stats)
        return _LAST.get(dep, data, (seed, balanced), lambda: measured_scores(dep, data, rows, balanced=balanced)).copy()
    score.__doc__ = "fisher_joint's orders, each group's damage curve scaled to the measured output change" + (
        ", every output row weighed by its typical damage" if balanced else "")
    return score


for _name, _balanced in (("fisher_measured", False), ("fisher_balanced", True)):
    criterion(_name, data=True, gram=True)(_measured(_balanced))  # Grams: fisher's reconstruction fallback
    COMPARABLE.add(_name)
