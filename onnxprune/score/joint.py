"""fisher_joint: output-space damage of removing channels *together*, so redundant channels are not
all removed because each looks free alone.

fisher (score/fisher.py) scores channel c by E[s_c^2], s_c = v^T J d_c for random output probes v, and a
global ranking adds those scores. To first order, removing a set S of one group moves the outputs by
J sum_{c in S} d_c, so its damage is

    D(S) = E[(sum_{c in S} s_c)^2] = sum_{a, b in S} G_ab,   G = E[s s^T] over (sample, probe) rows,

whose cross terms G_ab are what the additive sum drops: channels whose effects point the same way
(redundant copies feeding the same output) cost more together than apart. Within each group channels
are removed greedily, each time the one whose marginal damage G_cc + 2 sum_{b in S} G_cb is smallest;
a channel's score is that marginal (kept non-decreasing along the group's order), so a global
threshold on the scores removes a prefix of every group's order and compares marginals across groups,
as fisher's scores are compared.

With a few dozen rows, the signed G lets a greedy choice cancel the damage already done (a new
channel anti-correlated with the removed sum, by chance), which the outputs do not: `fisher_joint`
keeps only the positive cross terms (removal never looks cheaper because of what was removed before);
`fisher_joint_signed` uses G as it is and `fisher_joint_abs` uses E[|s_a| |s_b|] (an upper bound that
counts every pair of channels as aligned). Cross terms between groups are left out: the first-order
model is least trustworthy across layers, and fisher's scores compare groups already.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.errors import BadInputError
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion
from onnxprune.score.fisher import PROBES, _fisher_scores, fisher_scores
from onnxprune.score.memo import LastModel

MODES = ("positive", "signed", "abs")
_LAST = LastModel()  # one model's rows, reused


def probe_rows(dep: Dependency, data, probes: int = PROBES, seed: int = 0) -> np.ndarray:
    """[runs, channels] first-order output change s_c of each (sample, probe); NaN where no gradient reaches."""
    if data is None:
        raise BadInputError("criterion 'fisher_joint' needs calibration data: pass --calib DATA.npz")
    def collect() -> np.ndarray:
        collected: list = []
        _fisher_scores(dep, data, probes, seed, rows=collected)
        return np.stack(collected) if collected else np.ones((1, dep.num_channels))
    return _LAST.get(dep, data, (probes, seed), collect)


def pair_damage(rows: np.ndarray, mode: str = "positive") -> np.ndarray:
    """G_ab, the first-order damage cross term of channels a and b (columns of `rows`) under `mode`."""
    if mode == "abs":
        rows = np.abs(rows)
    g = rows.T @ rows / max(len(rows), 1)
    if mode == "positive":
        diag = np.diag(g).copy()
        g = np.maximum(g, 0.0)
        np.fill_diagonal(g, diag)
    return g


def greedy_order(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channels (indices into g) in greedy removal order and each one's marginal damage when removed."""
    n = len(g)
    left = np.ones(n, bool)
    cross = np.zeros(n)  # sum over removed b of G_cb
    order, marginal = np.empty(n, int), np.empty(n)
    diag = np.diag(g)
    for k in range(n):
        cost = np.where(left, diag + 2.0 * cross, np.inf)
        c = int(np.argmin(cost))
        order[k], marginal[k] = c, cost[c]
        left[c] = False
        cross += g[:, c]
    return order, marginal


def group_orders(dep: Dependency, rows: np.ndarray, mode: str = "positive"):
    """Per group with free channels that gradients reach: (group, those channels in greedy removal
    order, each one's marginal joint damage)."""
    if mode not in MODES:
        raise ValueError(f"unknown joint damage mode {mode!r}")
    unseen = np.isnan(rows).any(0)
    for grp in dep.groups:
        free = grp.channels[~grp.frozen & ~unseen[grp.channels]]
        if len(free):
            order, marginal = greedy_order(pair_damage(rows[:, free], mode))
            yield grp, free[order], marginal


def monotone_scores(dep: Dependency, ordered: dict[int, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Scores from each group's (channels in removal order, marginal damage): made strictly increasing
    along the order, so a global threshold removes a prefix of every group; channels in no order
    (frozen, or no gradient reaches them) score above every other."""
    scores = np.full(dep.num_channels, np.nan)
    for channels, marginal in ordered.values():
        level = np.maximum.accumulate(np.maximum(marginal, 0.0))
        level = level * (1.0 + 1e-9 * np.arange(len(level))) + 1e-30 * (1 + np.arange(len(level)))  # ties: the order
        scores[channels] = level
    known = scores[~np.isnan(scores)]
    top = float(known.max()) * 2.0 + 1e-30 if len(known) else 1.0
    return np.where(np.isnan(scores), top, scores)


def joint_scores(dep: Dependency, rows: np.ndarray, mode: str = "positive") -> np.ndarray:
    """Per channel, its marginal joint damage at its place in its group's greedy removal order."""
    return monotone_scores(dep, {grp.id: (order, marginal) for grp, order, marginal in group_orders(dep, rows, mode)})


def _joint(mode: str):
    def score(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
        try:
            rows = probe_rows(dep, data, seed=seed)
        except BadInputError:
            raise
        except Exception:  # noqa: BLE001  (no gradients: fisher's own fallback, with its warning)
            return fisher_scores(dep, data, seed=seed, stats=stats)
        return joint_scores(dep, rows, mode)
    score.__doc__ = f"Marginal first-order output damage of each channel removed after its group's cheaper ones ({mode} cross terms)."
    return score


for _name, _mode in (("fisher_joint", "positive"), ("fisher_joint_signed", "signed"), ("fisher_joint_abs", "abs")):
    criterion(_name, data=True, gram=True)(_joint(_mode))  # Grams: fisher's reconstruction fallback
    COMPARABLE.add(_name)
