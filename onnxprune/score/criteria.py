"""Channel importance: a score per channel, aggregated over every member of its group.

Each criterion is a small registered function `(dep, stats=None, **options) -> scores[channels]`.
Member tensors (weights, biases, activations) give one value per index; each member's values are
normalised by their mean, so a wide layer does not outvote a narrow one, and summed into the
channels they belong to, so coupled layers decide together.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from onnxprune.score.calibration import Statistics
from onnxprune.couple.dependency import Dependency
from onnxprune.errors import BadInputError
from onnxprune.couple.vocabulary import Slot
from onnxprune.graph.constants import KEEP_ELEMENTS
from onnxprune.graph.cost import is_floating
from onnxprune.score.batched import accumulate_all, power_sums

Criterion = Callable[..., np.ndarray]
CRITERIA: dict[str, Criterion] = {}
NEEDS_DATA: set[str] = set()
NEEDS_GRAM: set[str] = set()
GRADIENT_BASED = {"taylor"}  # criteria that read gradients, not activation statistics


def criterion(name: str, data: bool = False, gram: bool = False):
    def register(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        if data:
            NEEDS_DATA.add(name)
        if gram:
            NEEDS_GRAM.add(name)
        return fn
    return register


def parameter_slots(dep: Dependency):
    """(slot, array) for every floating-point constant that has a slot (BN statistics excluded)."""
    for slot in dep.slots:
        value = dep.graph.constants.get(slot.tensor)
        if value is not None and is_floating(value.dtype) and value.ndim >= 1:  # memoized per dtype
            if not _is_statistic(dep, slot):
                yield slot, value


def _is_statistic(dep: Dependency, slot: Slot) -> bool:
    """BatchNorm running mean/variance describe the data, not the channel's weight."""
    for c in dep.graph.consumers.get(slot.tensor, []):
        node = dep.graph.nodes[c]
        if node.op == "BatchNormalization" and slot.tensor in node.inputs[3:5]:
            return True
    return False


def accumulate(dep: Dependency, members) -> np.ndarray:
    """Sum mean-normalised per-index values of (slot, values) members into channel scores."""
    scores = np.zeros(dep.num_channels)
    for slot, values in members:
        mean = float(np.mean(values))
        if mean > 0:
            np.add.at(scores, dep.elements(slot), values / mean)
    return scores


def per_index(value: np.ndarray, axis: int) -> np.ndarray:
    """Rows of `value` along `axis`, flattened: one row per index of the slot."""
    return np.moveaxis(value.astype(np.float64), axis, 0).reshape(value.shape[axis], -1)


def magnitude(dep: Dependency, p: int) -> np.ndarray:
    """accumulate(dep, (slot, _power_sums(value, slot.axis, p)) per parameter slot) ** (1 / p), the
    small tensors batched (score/batched.py: the same values, without numpy's per-call cost per slot)."""
    slots, sums = power_sums(parameter_slots(dep), p, KEEP_ELEMENTS, BLOCK_ELEMENTS, _power_sums)
    return accumulate_all(dep, slots, sums) ** (1.0 / p)


BLOCK_ELEMENTS = 1 << 22  # float64 temporaries of at most 32 MB, however large the weight


def _power_sums(value: np.ndarray, axis: int, p: int) -> np.ndarray:
    """sum(|row| ** p) of each row of per_index(value, axis), a block of rows at a time: each row is
    summed exactly as a whole-tensor per_index would, without a float64 copy of a 400 MB weight."""
    if value.size <= BLOCK_ELEMENTS:  # the common case: one block, no slicing
        return _row_power_sums(per_index(value, axis), p)
    rows = value.shape[axis]
    step = max(1, BLOCK_ELEMENTS // max(1, value.size // max(rows, 1)))
    out = np.empty(rows)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = np.take(value, np.arange(start, stop), axis=axis)
        out[start:stop] = _row_power_sums(per_index(block, axis), p)
    return out


def _row_power_sums(rows: np.ndarray, p: int) -> np.ndarray:
    """sum(|row| ** p) per row, in place on `rows` (per_index's own float64 copy): the same values,
    in the same layout, as (np.abs(rows) ** p).sum(1), without its two temporaries of the tensor's size."""
    np.abs(rows, out=rows)
    if p != 1:
        rows **= p  # numpy's scalar-power fast path, as `** p` takes
    return rows.sum(1)


@criterion("l1")
def l1(dep: Dependency, **_) -> np.ndarray:
    """Sum of |w| over every weight, bias and scale slice of the channel."""
    return magnitude(dep, 1)


@criterion("l2")
def l2(dep: Dependency, **_) -> np.ndarray:
    """Group L2 norm (Torch-Pruning's default criterion)."""
    return magnitude(dep, 2)


@criterion("fpgm")
def fpgm(dep: Dependency, **_) -> np.ndarray:
    """Filter pruning via the geometric median: a filter close to all others is redundant."""
    members = []
    for slot, v in parameter_slots(dep):
        rows = per_index(v, slot.axis)
        if rows.shape[1] < 2:
            continue
        sq = (rows * rows).sum(1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0))
        members.append((slot, dist.sum(1)))
    return accumulate(dep, members)


@criterion("lamp")
def lamp(dep: Dependency, **_) -> np.ndarray:
    """Layer-adaptive magnitude: a channel's squared norm over the sum of those not smaller."""
    members = []
    for slot, v in parameter_slots(dep):
        sq = (per_index(v, slot.axis) ** 2).sum(1)
        order = np.argsort(sq)
        tail = np.cumsum(sq[order][::-1])[::-1]  # sum of squares of channels ranked at or above
        score = np.empty_like(sq)
        score[order] = sq[order] / np.maximum(tail, 1e-30)
        members.append((slot, score))
    return accumulate(dep, members)


@criterion("bn_scale")
def bn_scale(dep: Dependency, **_) -> np.ndarray:
    """|gamma| of BatchNormalization (network slimming); groups without BN fall back to L2."""
    members = []
    for node in dep.graph.nodes:
        if node.op == "BatchNormalization" and Slot(node.inputs[1], 0) in dep.slot_index:
            members.append((Slot(node.inputs[1], 0), np.abs(dep.graph.const(node.inputs[1]).astype(np.float64))))
    scores = accumulate(dep, members)
    fallback = l2(dep)
    has_bn = scores > 0
    return np.where(has_bn, scores, fallback / max(float(fallback.mean()), 1e-30) * 1e-3)


@criterion("random")
def random(dep: Dependency, seed: int = 0, **_) -> np.ndarray:
    """A baseline: uniform random scores."""
    return np.random.default_rng(seed).random(dep.num_channels)


def _activation_members(dep: Dependency, stats: Statistics, fn):
    for slot in dep.slots:
        st = stats.get(slot.tensor, slot.axis) if slot.tensor not in dep.graph.constants else None
        if st is not None and st.sum is not None:
            yield slot, fn(st)


@criterion("activation", data=True)
def activation(dep: Dependency, stats: Statistics | None = None, **_) -> np.ndarray:
    """Mean |activation| of the channel wherever it flows (needs calibration data)."""
    return accumulate(dep, _activation_members(dep, _need(stats, "activation"), lambda st: st.mean_abs))


@criterion("apoz", data=True)
def apoz(dep: Dependency, stats: Statistics | None = None, **_) -> np.ndarray:
    """1 - average percentage of zeros: channels that are mostly dead score low."""
    return accumulate(dep, _activation_members(dep, _need(stats, "apoz"), lambda st: 1.0 - st.apoz + 1e-6))


def _linear_inputs(dep: Dependency, stats: Statistics | None, name: str):
    """(slot, weight, weight axis, input statistics, covariance or None) of every linear consumer
    whose input is a prunable slot with statistics. The weight stays as stored: only consumers narrow
    enough for a Gram take its float64 rows; wider ones use `_row_energy`, a block at a time."""
    from onnxprune.couple.ops import linear_sites
    stats = _need(stats, name)
    for _, site in linear_sites(dep.graph):
        slot = Slot(site.x, site.x_axis)
        st = stats.get(site.x, site.x_axis)
        if slot not in dep.slot_index or st is None:
            continue
        yield slot, dep.graph.const(site.weight), site.weight_axis, st, st.covariance()


def _row_energy(weight: np.ndarray, axis: int) -> np.ndarray:
    """||W[c]||^2 per input channel, without a float64 copy of a 400 MB classifier weight."""
    return _power_sums(weight, axis, 2)


def _linear_input_scores(dep: Dependency, stats: Statistics | None, name: str, cost) -> np.ndarray:
    """Channel scores from every linear consumer: `cost(weight, axis, cov)` per input channel from the
    weight (as stored; the input channels on `axis`) and the input's covariance (a fresh array the cost
    may overwrite); inputs too wide for a Gram take the diagonal, |w|^2 E[x^2]."""
    members = []
    for slot, weight, axis, st, cov in _linear_inputs(dep, stats, name):
        if cov is None:
            members.append((slot, _row_energy(weight, axis) * st.sq_sum / max(st.count, 1)))
        else:
            members.append((slot, cost(weight, axis, cov)))
    return accumulate(dep, members) + 1e-9 * magnitude(dep, 2)  # break ties where a group has no linear consumer


@criterion("reconstruction", data=True, gram=True)
def reconstruction(dep: Dependency, stats: Statistics | None = None, ridge: float = 1e-3, **_) -> np.ndarray:
    """OBS-style output error of removing each input channel of every linear layer on its own, when
    the remaining channels compensate optimally: ||W[:, c]||^2 / [(Cov + ridge)^-1]_cc."""
    def cost(weight: np.ndarray, axis: int, cov: np.ndarray) -> np.ndarray:
        return _row_energy(weight, axis) / np.maximum(_ridged_inverse_diagonal(cov, ridge), 1e-30)
    return _linear_input_scores(dep, stats, "reconstruction", cost)


def _ridged_inverse_diagonal(cov: np.ndarray, ridge: float) -> np.ndarray:
    """diag((Cov + ridge * mean(diag Cov) * I)^-1). Ridges `cov` in place (each covariance() is a fresh
    array, used once): beside it only LAPACK's inverse is held (a 4,096-wide classifier input: 134 MB
    each; no ridged copy, no identity matrix, no float64 copy of the weight)."""
    n = len(cov)
    cov.flat[::n + 1] += ridge * max(float(np.trace(cov)) / n, 1e-12)
    return np.diag(np.linalg.inv(cov)).copy()


@criterion("taylor", data=True)
def taylor(dep: Dependency, stats: Statistics | None = None, data=None, batch_size: int = 32, **_) -> np.ndarray:
    """First-order Taylor (Molchanov et al.): (sum of w * dL/dw over the channel's weights)^2, averaged
    over labelled calibration batches; gradients come from the in-graph training graph in ONNX Runtime."""
    from onnxprune.autodiff import build_training_graph, read_weights
    from onnxprune.load.runtime import batchable, session

    if data is None or data.labels is None:
        raise BadInputError("criterion 'taylor' needs labelled calibration data (a 'labels' array in --calib)")
    model = dep.graph.model
    tg = build_training_graph(model, loss="cross_entropy", input_shapes=data.sample_shapes())
    weights = read_weights(model, tg.trainable)
    sess = session(tg.model)
    slots = [(slot, v) for slot, v in parameter_slots(dep) if slot.tensor in tg.grads]
    sums = {slot: np.zeros(v.shape[slot.axis]) for slot, v in slots}
    batches = 0
    can_batch = batchable(session(model))
    step = batch_size if can_batch else 1
    for start in range(0, len(data), step):
        feed = {k: np.concatenate(list(v[start:start + step])) for k, v in data.inputs.items()}
        feed.update(weights)
        feed[tg.target] = data.labels[start:start + step].astype(np.int64)
        grads = dict(zip(tg.grads.values(), sess.run(list(tg.grads.values()), feed)))
        for slot, v in slots:
            wg = per_index(v * grads[tg.grads[slot.tensor]], slot.axis).sum(1)
            sums[slot] += wg * wg
        batches += 1
    return accumulate(dep, ((slot, total / max(batches, 1)) for slot, total in sums.items())) + 1e-12


def _need(stats: Statistics | None, name: str) -> Statistics:
    if stats is None:
        raise BadInputError(f"criterion '{name}' needs calibration data: pass --calib DATA.npz")
    return stats


def score(dep: Dependency, name: str, stats: Statistics | None = None, **options) -> np.ndarray:
    if name not in CRITERIA:
        raise BadInputError(f"unknown criterion '{name}'; choose one of {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name](dep, stats=stats, **options)


def wanted_statistics(dep: Dependency, name: str) -> dict[tuple[str, int], bool]:
    """The activation statistics a criterion needs: every non-constant slot, Grams on linear inputs."""
    if name not in NEEDS_DATA or name in GRADIENT_BASED:  # gradients, not activations
        return {}
    wanted = {(s.tensor, s.axis): False for s in dep.slots if s.tensor not in dep.graph.constants}
    if name in NEEDS_GRAM:
        from onnxprune.couple.ops import linear_sites
        for _, site in linear_sites(dep.graph):
            if Slot(site.x, site.x_axis) in dep.slot_index:
                wanted[(site.x, site.x_axis)] = True
    return wanted


# ---- obs: greedy Optimal Brain Surgeon channel removal at every linear consumer.
#
# `reconstruction` scores each input channel alone (||W_c||^2 / [H^-1]_cc, the error of removing it
# when the others compensate). Channels are not removed alone: two near-duplicate channels each look
# free, yet removing both is not. Here each consumer removes its input channels one at a time, always
# the one whose removal (with the remaining weights re-solved, as ThiNet and He et al. 2017 reconstruct)
# costs least given those already gone; the weights and the inverse Gram are updated after each step
# (the OBS rank-one downdate). A channel's score is the running maximum of those costs at its turn, so
# the order within a consumer is the greedy order; groups sum their consumers' normalised scores.

def greedy_costs(weight_rows: np.ndarray, cov: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Per input channel: the running-max OBS cost at the step greedy removal takes it.

    `weight_rows` is [C, outputs] (one row per input channel), `cov` its input's [C, C] covariance.
    """
    c = len(cov)
    lam = ridge * max(float(np.trace(cov)) / max(c, 1), 1e-12)
    hinv = np.linalg.inv(cov + lam * np.eye(c))
    w = weight_rows.astype(np.float64).copy()
    alive = np.ones(c, dtype=bool)
    costs = np.zeros(c)
    running = 0.0
    for _ in range(c - 1):
        idx = np.flatnonzero(alive)
        d = np.maximum(np.diag(hinv)[idx], 1e-30)
        err = (w[idx] ** 2).sum(1) / d
        j = idx[int(np.argmin(err))]
        running = max(running, float(err.min()))
        costs[j] = running
        col = hinv[:, j] / hinv[j, j]
        w -= np.outer(col, w[j])            # the others compensate for channel j
        hinv -= np.outer(col, hinv[j])      # inverse of the Gram restricted to the survivors
        alive[j] = False
        hinv[j] = hinv[:, j] = 0.0
    costs[alive] = running * 2 + 1e-12      # the last survivor is the one to keep
    return costs


@criterion("obs", data=True, gram=True)
def obs(dep: Dependency, stats: Statistics | None = None, ridge: float = 1e-3, **_) -> np.ndarray:
    """Greedy OBS order of each linear consumer's input channels, from the calibration covariance."""
    return _linear_input_scores(dep, stats, "obs",
                                lambda weight, axis, cov: greedy_costs(per_index(weight, axis), cov, ridge))


# ---- relative: the reconstruction error as a share of the consumer's output, comparable across groups.
#
# Selection normalises every other criterion by its group's mean, so every group's average channel
# weighs the same. Here a channel's OBS error at each linear consumer is divided by that consumer's
# output variance (trace(W^T Cov W)): removing it costs 1% of one layer's output or 10% of another's,
# which a global ranking (by MAC saved with --scope cost) can compare.

COMPARABLE = {"relative"}  # criteria whose scores are ranked across groups as they are


@criterion("relative", data=True, gram=True)
def relative(dep: Dependency, stats: Statistics | None = None, ridge: float = 1e-3, **_) -> np.ndarray:
    """Per channel, the sum over its linear consumers of (error of removing it alone, the rest
    re-solved) / (the consumer's output variance)."""
    scores = np.zeros(dep.num_channels)
    for slot, weight, axis, st, cov in _linear_inputs(dep, stats, "relative"):
        if cov is None:  # too wide for a Gram: the diagonal
            mean = st.sum / max(st.count, 1)
            err = _row_energy(weight, axis) * np.maximum(st.sq_sum / max(st.count, 1) - mean ** 2, 0)
            energy = float(err.sum())
        else:
            rows = per_index(weight, axis)
            lam = ridge * max(float(np.trace(cov)) / len(cov), 1e-12)
            err = (rows ** 2).sum(1) / np.maximum(np.diag(np.linalg.inv(cov + lam * np.eye(len(cov)))), 1e-30)
            energy = float(np.einsum("co,cd,do->", rows, cov, rows))
        if energy > 0:
            np.add.at(scores, dep.elements(slot), err / energy)
    return scores + 1e-9 * magnitude(dep, 2)
