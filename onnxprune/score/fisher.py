"""fisher: label-free, output-space channel importance (Group Fisher, Liu et al. ICML 2021, without labels).

Removing channel c of a group zeroes it wherever the group's tensors are read by a linear consumer
(Conv, Gemm, MatMul with a constant weight). To first order the model's outputs move by J d_c, and
||J d_c||^2 is the damage. For a random probe v, L = <outputs, v> gives

    s_c = sum over c's consumer weights of W * dL/dW  =  sum over positions of x_c * dL/dx_c  =  v^T J d_c

and E_v[s_c^2] = ||J d_c||^2: one backward pass per sample and probe (autodiff/probe.py), no labels.
The probe graph returns the middle form, x_c * dL/dx_c summed per channel at each linear consumer (a
tap), so no weight gradient is computed for them.
Each output row (index along axis 1: a detector's box coordinates and each class score) is divided by
its standard deviation over the calibration set, so every row weighs alike and pixel-scale box
coordinates do not drown the scores. The scores are one quantity for every channel of every group, so
a global ranking compares them as they are (COMPARABLE in score/criteria.py).

Channels with no linear consumer fall back to their producers' weights (the same identity at the
producer's output); channels no gradient reaches (an op without a gradient rule on the way) are kept:
they score the highest known value.

`fisher_recon` keeps fisher's per-group allocation but orders channels within each group by the
`reconstruction` criterion (which channel the next layer misses least once re-solved): each group's
sorted fisher values are handed out in reconstruction order, so a global threshold removes the same
number of channels from each group as fisher would.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.vocabulary import Slot
from onnxprune.errors import BadInputError
from onnxprune.score.branch_outputs import branch_view, decided_view
from onnxprune.score.output_parts import free_channels, part_mask, part_weights, parts
from onnxprune.score.calibration import Statistics
from onnxprune.score.criteria import COMPARABLE, criterion, parameter_slots, per_index, reconstruction
from onnxprune.score.memo import LastModel

log = logging.getLogger("onnxprune")
PROBES = 2          # random probes per calibration sample: a few backward passes each
STD_FLOOR = 1e-6    # a constant output row is floored at this share of the output's largest row std
CONSTANT_STD = 1e-20  # an output whose largest row std is at most this is constant on the data


def _sites(dep: Dependency) -> tuple[list[tuple[Slot, str, int]], list[tuple[Slot, str, int]]]:
    """(group slot, weight, weight axis) of every linear consumer of a group tensor, and the producer-side
    parameter slots (weights, biases, scales on the channel's axis) used where a channel has none."""
    from onnxprune.couple.ops import linear_sites
    sites = [(Slot(s.x, s.x_axis), s.weight, s.weight_axis) for _, s in linear_sites(dep.graph)
             if Slot(s.x, s.x_axis) in dep.slot_index]
    site_weights = {w for _, w, _ in sites}
    producers = [(slot, slot.tensor, slot.axis) for slot, _ in parameter_slots(dep) if slot.tensor not in site_weights]
    return sites, producers


def _rows(out: np.ndarray) -> np.ndarray:
    return per_index(out, 1) if out.ndim >= 2 else np.asarray(out, np.float64).reshape(1, -1)


def _row_std(sess, data, names: list[str]) -> tuple[dict[str, np.ndarray], list[list[tuple[int, ...]]]]:
    """Per output, the standard deviation of each index along axis 1 over samples and positions; and
    each sample's output shapes (the probes'). (Scaling each element by its spread across samples
    instead did worse on NudeNet: 34.4 against 40.5 face F1, docs/benchmarks.md.)"""
    shapes = []
    acc: dict[str, list] = {}
    taken = {i.name for i in sess.get_inputs()}  # a view may read fewer inputs (a decided If's condition)
    for i in range(len(data)):
        outs = sess.run(names, {k: np.asarray(v[i]) for k, v in data.inputs.items() if k in taken})
        shapes.append([o.shape for o in outs])
        for name, out in zip(names, outs):
            rows = _rows(out)
            a = acc.setdefault(name, [0.0, 0.0, 0])
            a[0], a[1], a[2] = a[0] + rows.sum(1), a[1] + (rows * rows).sum(1), a[2] + rows.shape[1]
    stds = {}
    for name in names:
        total, squares, count = acc[name]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        # an output that does not vary over the data ranks nothing: probed with zeros (a floor of ~1e-36
        # made probes of ~1e36, whose gradients overflowed to inf and NaN in every channel's score)
        stds[name] = np.maximum(std, STD_FLOOR * float(std.max())) if std.max() > CONSTANT_STD else np.zeros_like(std)
    return stds, shapes


def _rowwise(values: np.ndarray, ndim: int) -> np.ndarray:
    """Per-row values shaped to broadcast along axis 1 of an ndim-dimensional output (see _rows)."""
    return values.reshape((1, -1) + (1,) * (ndim - 2)) if ndim >= 2 else values


def _probe(shape: tuple[int, ...], std: np.ndarray, rng: np.random.Generator, dtype) -> np.ndarray:
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)  # a constant output: zeros
    v = rng.standard_normal(shape) * _rowwise(inverse, len(shape))
    return v.astype(dtype)


def _weight_share(dep: Dependency, weight: str, axis: int, grad: np.ndarray) -> np.ndarray:
    """W * dW summed over each index of W's `axis`."""
    return per_index(dep.graph.const(weight) * grad, axis).sum(1)


def _channel_sums(dep: Dependency, members, grads: dict[str, np.ndarray]) -> np.ndarray:
    """Per channel: sum over members (slot, weight, axis) of W * dW summed over the channel's slice."""
    out = np.zeros(dep.num_channels)
    for slot, weight, axis in members:
        g = grads.get(weight)
        if g is not None:
            np.add.at(out, dep.elements(slot), _weight_share(dep, weight, axis, g))
    return out


def _site_sums(dep: Dependency, sites, taps: dict[tuple[str, str], np.ndarray], grads: dict[str, np.ndarray]
               ) -> np.ndarray:
    """Per channel: sum over sites (slot, weight, axis) of the probe graph's x * dx through that layer, or of
    W * dW where the probe graph could not tap it (autodiff/probe.py)."""
    out = np.zeros(dep.num_channels)
    for slot, weight, axis in sites:
        v = taps.get((slot.tensor, weight))
        if v is not None:
            np.add.at(out, dep.elements(slot), np.asarray(v, np.float64))
        elif weight in grads:
            np.add.at(out, dep.elements(slot), _weight_share(dep, weight, axis, grads[weight]))
    return out


_LAST = LastModel()  # one model's scores, reused when several plans are chosen from it


def fisher_scores(dep: Dependency, data, probes: int | None = None, seed: int = 0,
                  stats: Statistics | None = None, parts_alike: bool = False,
                  view: tuple[str, onnx.ModelProto] | None = None) -> np.ndarray:
    """E over calibration samples and random output probes of s_c^2 (module docstring), per channel.
    `view`: (its name, a model with the same weights whose outputs are probed instead of the analysed
    model's; score/logit_outputs.py). `probes`: per sample, PROBES when None (read at the call)."""
    probes = PROBES if probes is None else probes
    return _LAST.get(dep, data, (probes, seed, parts_alike, view[0] if view else None),
                     lambda: _scores_or_fallback(dep, data, probes, seed, stats, parts_alike,
                                                 view[1] if view else None)).copy()


def _scores_or_fallback(dep: Dependency, data, probes: int, seed: int, stats: Statistics | None,
                        parts_alike: bool = False, model: onnx.ModelProto | None = None) -> np.ndarray:
    """fisher's scores; if the model cannot be back-propagated (an op the autodiff or ONNX Runtime
    refuses), the reconstruction criterion's, each group divided by its mean as global selection
    would do for it, with a warning naming the reason."""
    if data is None:
        raise BadInputError("criterion 'fisher' needs calibration data: pass --calib DATA.npz")
    try:
        return _fisher_scores(dep, data, probes, seed, parts_alike=parts_alike, model=model)
    except Exception as exc:  # noqa: BLE001  (any autodiff/runtime failure: score without gradients)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("fisher: no output gradients (%s); channels scored by reconstruction instead", reason)
    fallback = reconstruction(dep, stats) if stats is not None else np.ones(dep.num_channels)
    for grp in dep.groups:
        mean = float(fallback[grp.channels].mean())
        if mean > 0:
            fallback[grp.channels] /= mean
    return fallback


def _fisher_scores(dep: Dependency, data, probes: int, seed: int, rows: list | None = None,
                   parts_alike: bool = False, model: onnx.ModelProto | None = None) -> np.ndarray:
    """E[s_c^2] per channel; with `rows` (a list), also each (sample, probe)'s s_c, one array per run,
    NaN where no gradient reaches the channel (score/joint.py reads them). With `parts_alike`, each
    output part of its own scale weighs the same (score/output_parts.py)."""
    from onnxprune.autodiff.probe import build_probe_graph
    from onnxprune.load.runtime import session

    sites, producers = _sites(dep)
    weights = list(dict.fromkeys(w for _, w, _ in producers))
    model = dep.graph.model if model is None else model
    model = decided_view(model, data.sample_shapes()) or model  # Ifs the shapes decide: the branch taken
    model = branch_view(model) or model  # an output If: both branches probed (score/branch_outputs.py)
    pg = build_probe_graph(model, weights, input_shapes=data.sample_shapes(),
                           taps=[(slot.tensor, w) for slot, w, _ in sites])
    if pg.frozen:
        log.warning("fisher: %d weights get no complete gradient (e.g. %s); their channels are kept",
                    len(pg.frozen), next(iter(pg.frozen.values())))
    if not pg.taps and not any(w in pg.grads for _, w, _ in sites):  # e.g. QDQ: DequantizeLinear outputs as weights
        raise ValueError("no linear layer's weight is an initializer the outputs' gradient reaches")
    outputs = list(pg.probes)
    stds, shapes = _row_std(session(model), data, outputs)
    sess = session(pg.model)
    names = list(pg.grads.values()) + list(pg.taps.values())
    dtypes = {i.name: i.type for i in sess.get_inputs()}
    split = parts(stds, STD_FLOOR) if parts_alike else []
    split = split if len(split) > 1 else [(None, None)]  # one part: every output probed at once, as always
    rng = np.random.default_rng(seed)
    site_sq, producer_sq = np.zeros((len(split), dep.num_channels)), np.zeros((len(split), dep.num_channels))
    for i in range(len(data)):
        feed = {k: np.asarray(v[i]) for k, v in data.inputs.items() if k in pg.inputs and k in dtypes}
        for _ in range(probes):
            for p, (part_output, part_rows) in enumerate(split):
                for out, shape in zip(outputs, shapes[i]):
                    v = _probe(shape, stds[out], rng, np.float64)
                    if part_output is not None:  # this part's rows only
                        v *= _rowwise(part_mask(stds[out], part_rows), len(shape)) if out == part_output else 0.0
                    feed[pg.probes[out]] = v.astype(_np_dtype(dtypes[pg.probes[out]]))
                outs = sess.run(names, feed)
                grads, taps = dict(zip(pg.grads, outs)), dict(zip(pg.taps, outs[len(pg.grads):]))
                site, producer = _site_sums(dep, sites, taps, grads), _channel_sums(dep, producers, grads)
                site_sq[p] += site ** 2
                producer_sq[p] += producer ** 2
                if rows is not None:
                    rows.append((p, site, producer))
    runs = max(len(data) * probes, 1)
    has_site, has_producer = _seen(dep, sites, producers, set(pg.taps), set(pg.grads))
    weights = part_weights(split, [np.where(has_site, a, np.where(has_producer, b, 0.0)) for a, b in zip(site_sq, producer_sq)],
                           free_channels(dep))
    if rows is not None:
        rows[:] = [np.sqrt(weights[p]) * np.where(has_site, a, np.where(has_producer, b, np.nan)) for p, a, b in rows]
    return _combine(dep, weights @ site_sq / runs, weights @ producer_sq / runs, has_site, has_producer)


def _np_dtype(onnx_type: str):
    return np.float16 if "float16" in onnx_type else np.float64 if "double" in onnx_type else np.float32


def _seen(dep: Dependency, sites, producers, tapped: set[tuple[str, str]], known: set[str]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Channels with a linear consumer that is tapped or whose weight gets a gradient (a complete gradient
    reaches it); channels with a producer whose weight gets one."""
    has_site, has_producer = np.zeros(dep.num_channels, bool), np.zeros(dep.num_channels, bool)
    for slot, weight, _ in sites:
        if (slot.tensor, weight) in tapped or weight in known:
            has_site[dep.elements(slot)] = True
    for slot, weight, _ in producers:
        if weight in known:
            has_producer[dep.elements(slot)] = True
    return has_site, has_producer


def _combine(dep: Dependency, site: np.ndarray, producer: np.ndarray, has_site: np.ndarray,
             has_producer: np.ndarray) -> np.ndarray:
    """Site scores where a channel has a linear consumer with a gradient, else producer scores, else
    (no gradient reaches it) the highest known score: what the probes cannot see is kept."""
    scores = np.where(has_site, site, np.where(has_producer, producer, np.nan))
    unseen = np.isnan(scores)
    top = float(np.nanmax(scores)) if (~unseen).any() else 1.0
    scores[unseen] = top
    return scores + 1e-30


@criterion("fisher", data=True, gram=True)  # Grams: the reconstruction fallback
def fisher(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """||J d_c||^2: first-order damage to every (row-standardised) output of removing the channel,
    estimated with random output probes through the in-graph backward pass; no labels."""
    return fisher_scores(dep, data, seed=seed, stats=stats)


@criterion("fisher_parts", data=True, gram=True)
def fisher_parts(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **_) -> np.ndarray:
    """fisher with every output part of its own scale weighed alike (score/output_parts.py): a detector's
    pixel boxes count as much as its class scores, two graph outputs as much as each other."""
    return fisher_scores(dep, data, seed=seed, stats=stats, parts_alike=True)


@criterion("fisher_recon", data=True, gram=True)
def fisher_recon(dep: Dependency, stats: Statistics | None = None, data=None, seed: int = 0, **options) -> np.ndarray:
    """fisher's per-group allocation, reconstruction's order within each group."""
    return reorder_within_groups(dep, fisher_scores(dep, data, seed=seed, stats=stats), reconstruction(dep, stats, **options))


def reorder_within_groups(dep: Dependency, values: np.ndarray, order_by: np.ndarray) -> np.ndarray:
    """Per group, the multiset of `values` reassigned so that their ranks follow `order_by`."""
    out = values.copy()
    for grp in dep.groups:
        free = grp.channels[~grp.frozen]
        if len(free) > 1:
            out[free[np.argsort(order_by[free], kind="stable")]] = np.sort(values[free])
    return out


COMPARABLE.update({"fisher", "fisher_parts", "fisher_recon"})
