"""fisher_comp: fisher's output damage, times the share of the channel that recovery cannot put back.

`fisher` scores the damage of *zeroing* channel c. The default recovery (`sequential`) then re-solves
every linear consumer on the kept channels, so what is left of that damage is roughly the part of x_c
that the other inputs of the same consumer (and its bias) cannot predict. `reconstruction` measures
that compensated error at the consumer, but not how much the outputs care about it; fisher measures the
latter, not the former. Here each channel's fisher score is multiplied by

    u_c = E[(x_c - best fit of x_c from the other inputs)^2] / E[x_c^2]      in [0, 1]

from the Grams the statistics pass already gathers for `reconstruction` (no second pass). The residual
is the Schur complement 1 / [(M + lam I)^-1]_cc - lam of the consumer's input moment matrix M with the
same ridge as `reconstruction` (the ridged fit's residual: never below 0, never above M_cc). Centering:
a consumer with a bias (recovery gives every Conv/Gemm one, recover/reconstruction.add_missing_biases;
its re-solve has an intercept) absorbs the channel's mean, so M is the centered covariance there; a
consumer without one (a bare MatMul) can only use the other channels, so M is the raw second moment.
The denominator is always the raw E[x_c^2]: fisher's damage is that of removing all of x_c, mean
included, so a channel that is nearly constant on the data costs nearly nothing once the bias takes
its mean. A group read by several consumers takes each site's u_c weighted by the channel's energy
there, ||W[c]||^2 E[x_c^2]; a site without a Gram (too wide, or over the Gram budget) and a channel
with no linear consumer count u_c = 1 (fisher as it is). The scores stay in fisher's units, so the
global ranking compares them as they are (COMPARABLE).

The fit is in-sample: with p inputs and n rows (positions times samples) its residual understates what a
re-solve leaves on new data by about (1 - p/n)^2 (generalised cross-validation's factor), and with p >= n
(a 200-wide squeeze-excitation FC fed by 32 pooled samples) every input is "predicted" exactly from the
others while the re-solve only memorises the samples. So the share is divided by (1 - p/n)^2, and is 1
when p >= n: there, compensation is not measured, fisher stands.

One-at-a-time, like `reconstruction`, two copies of a channel each look free, and a group whose channels
predict each other well looks cheap as a whole though half of it cannot go at once: measured, that
over-pruned PP-OCR cls's early layers (91 against fisher's 97 at half the MACs, docs/benchmarks.md).
`fisher_comp_ordered` fits each channel only from the channels fisher ranks above it at the same
consumer, the ones still there when it goes: the pivots of a Cholesky factor of M taken in fisher's
order (one factorisation per consumer). Of two copies only the lower-ranked one is free; the top channel
of each consumer keeps its fisher score. Variants measured beside it: `fisher_comp_spread` (the share of
the variance, 1 - R^2, the mean not credited) and `fisher_comp_within` (fisher's per-group counts,
fisher_comp's order inside each group, as fisher_recon).
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.vocabulary import Slot
from onnxprune.score.calibration import ChannelStats, Statistics
from onnxprune.score.criteria import COMPARABLE, _row_energy, criterion
from onnxprune.score.fisher import fisher_scores, reorder_within_groups
from onnxprune.score.logit_outputs import _logit_view

RIDGE = 1e-3  # as `reconstruction`: a share of the mean diagonal


def unexplained(moment: np.ndarray, second: np.ndarray, ridge: float = RIDGE, rows: int | None = None) -> np.ndarray:
    """Per channel, the share of E[x_c^2] (`second`) left by the ridged linear fit of x_c from the other
    channels under the moment matrix `moment` (overwritten), over `rows` rows (None: as many as it takes,
    no correction; module docstring); 1 where E[x_c^2] is 0."""
    n = len(moment)
    if rows is not None and n >= rows:
        return np.ones(n)
    lam = ridge * max(float(np.trace(moment)) / max(n, 1), 1e-12)
    moment.flat[::n + 1] += lam
    residual = 1.0 / np.maximum(np.diag(np.linalg.inv(moment)), 1e-300) - lam
    share = np.divide(residual, second, out=np.ones(n), where=second > 0)
    if rows is not None:
        share /= (1.0 - n / rows) ** 2
    return np.clip(share, 0.0, 1.0)


def _moment(st: ChannelStats, centered: bool) -> np.ndarray | None:
    if centered:
        return st.covariance()
    gram = st.gram
    return None if gram is None else gram / max(st.count, 1)


def _energy_weighted(dep: Dependency, stats: Statistics | None, site_share) -> np.ndarray:
    """Per channel, the mean over its linear consumers of `site_share(site, channels, moment, second, st)`
    (a share per consumer input channel; `moment` None when the statistics kept no Gram), each consumer
    weighted by the output energy the channel gives it, |W[:, c]|^2 E[x_c^2]; 1 where nothing was measured."""
    from onnxprune.couple.ops import linear_sites
    if stats is None:  # none gathered (no channel to prune): fisher alone, which has said if data is missing
        return np.ones(dep.num_channels)
    total, weight_sum = np.zeros(dep.num_channels), np.zeros(dep.num_channels)
    for _, site in linear_sites(dep.graph):
        slot = Slot(site.x, site.x_axis)
        st = stats.get(site.x, site.x_axis)
        if slot not in dep.slot_index or st is None:
            continue
        channels = dep.elements(slot)
        second = st.sq_sum / max(st.count, 1)
        energy = _row_energy(dep.graph.const(site.weight), site.weight_axis) * second
        moment = _moment(st, centered=site.bias is not None)
        share = np.ones(len(second)) if moment is None else site_share(site, channels, moment, second, st)
        np.add.at(total, channels, energy * share)
        np.add.at(weight_sum, channels, energy)
    return np.divide(total, weight_sum, out=np.ones(dep.num_channels), where=weight_sum > 0)


def compensable_shares(dep: Dependency, stats: Statistics | None, ridge: float = RIDGE, of_spread: bool = False) -> np.ndarray:
    """u_c per channel (module docstring): each linear consumer's unexplained share, energy-weighted.
    `of_spread`: the share of the channel's variance instead of its E[x^2] where the consumer has a bias
    (1 - R^2: the mean is neither lost nor credited)."""
    def share(site, channels, moment, second, st):
        of = np.diag(moment).copy() if of_spread and site.bias is not None else second
        return unexplained(moment, of, ridge, st.count)
    return _energy_weighted(dep, stats, share)


@criterion("fisher_comp", data=True, gram=True)
def fisher_comp(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher times the share of each channel its consumers' re-solve cannot recover."""
    return fisher_scores(dep, data, seed=seed, stats=stats) * compensable_shares(dep, stats) + 1e-30


@criterion("fisher_logit_comp", data=True, gram=True)
def fisher_logit_comp(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher_logit (sigmoid/softmax outputs probed as logits) times the same unrecoverable share."""
    scores = fisher_scores(dep, data, seed=seed, stats=stats, view=_logit_view(dep))
    return scores * compensable_shares(dep, stats) + 1e-30


def ordered_unexplained(moment: np.ndarray, second: np.ndarray, order: np.ndarray, ridge: float = RIDGE,
                        rows: int | None = None) -> np.ndarray:
    """Per channel, the share of E[x_c^2] (`second`) left by the ridged fit of x_c from only the channels
    before it in `order` (most important first): the pivots of the Cholesky factor of `moment` (in place)
    taken in that order. Of two copies the later one is free (u ~ 0), the earlier keeps u = 1: the copy
    that stays is what compensates. The k-th fit has k - 1 inputs, corrected as in `unexplained`."""
    n = len(moment)
    if rows is not None and n >= rows:  # recovery falls back to a ridge toward the dense weights there
        return np.ones(n)
    lam = ridge * max(float(np.trace(moment)) / max(n, 1), 1e-12)
    moment.flat[::n + 1] += lam
    try:
        pivots = np.diag(np.linalg.cholesky(moment[np.ix_(order, order)])) ** 2
    except np.linalg.LinAlgError:  # not positive definite even with the ridge: nothing measured
        return np.ones(n)
    share = np.ones(n)
    share[order] = np.divide(pivots - lam, second[order], out=np.ones(n), where=second[order] > 0)
    if rows is not None:
        inputs = np.empty(n)
        inputs[order] = np.arange(n)  # how many channels each fit reads
        share /= (1.0 - inputs / rows) ** 2
    return np.clip(share, 0.0, 1.0)


def ordered_shares(dep: Dependency, stats: Statistics | None, importance: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """As `compensable_shares`, each channel fitted only from the channels `importance` ranks above it
    at the same consumer (those still there when it goes)."""
    def share(site, channels, moment, second, st):
        order = np.argsort(-importance[channels], kind="stable")
        return ordered_unexplained(moment, second, order, ridge, st.count)
    return _energy_weighted(dep, stats, share)


@criterion("fisher_comp_ordered", data=True, gram=True)
def fisher_comp_ordered(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher times the share of each channel that the channels fisher ranks above it cannot predict."""
    fisher = fisher_scores(dep, data, seed=seed, stats=stats)
    return fisher * ordered_shares(dep, stats, fisher) + 1e-30


@criterion("fisher_logit_comp_ordered", data=True, gram=True)
def fisher_logit_comp_ordered(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher_logit times the share the channels it ranks above each one cannot predict."""
    fisher = fisher_scores(dep, data, seed=seed, stats=stats, view=_logit_view(dep))
    return fisher * ordered_shares(dep, stats, fisher) + 1e-30


@criterion("fisher_comp_spread", data=True, gram=True)
def fisher_comp_spread(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher times 1 - R^2 of each channel from the others at its consumers (the mean not credited)."""
    return fisher_scores(dep, data, seed=seed, stats=stats) * compensable_shares(dep, stats, of_spread=True) + 1e-30


@criterion("fisher_comp_within", data=True, gram=True)
def fisher_comp_within(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher's per-group counts, fisher_comp's order within each group (as fisher_recon, with fisher_comp)."""
    fisher = fisher_scores(dep, data, seed=seed, stats=stats)
    return reorder_within_groups(dep, fisher, fisher * compensable_shares(dep, stats))


COMPARABLE.update({"fisher_comp", "fisher_logit_comp", "fisher_comp_spread", "fisher_comp_within", "fisher_comp_ordered",
                   "fisher_logit_comp_ordered"})
