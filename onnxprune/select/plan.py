"""Selection: which channels each group keeps, as a Plan (couple/plan.py) that the rewrite applies.

Local scope removes the same share of every group; global scope ranks all channels together
(scores normalised per group) under a per-group cap. Targets (a fraction of MACs or parameters to
keep) are met by searching the share, with costs estimated in closed form from the kept fraction of
each slot, so a search step costs microseconds, not a rewrite.
"""

from __future__ import annotations

import fnmatch
import functools

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.errors import BadInputError
from onnxprune.couple.vocabulary import Slot
from onnxprune.graph.constants import sizes
from onnxprune.graph.cost import count_macs
from onnxprune.select.refine import least_widths, refine_weighted
from onnxprune.select.slot_fractions import SlotFractions, SlotView
from onnxprune.select.width_step import group_step

TARGET_TOLERANCE = 0.02  # a target is met when the kept fraction lands within this of it


def rounded_keep(total: int, ratio: float, round_to: int) -> int:
    """Channels to keep of `total` at `ratio` removed, rounded to a multiple of `round_to`.

    Groups no wider than `round_to` are rounded to single channels; nothing is ever emptied.
    """
    step = round_to if total > round_to else 1
    keep = int(round(total * (1.0 - ratio) / step)) * step
    return int(min(max(keep, step, 1), total))


def rounded_up(total: int, least: int, round_to: int) -> int:
    """The fewest channels of `total`, a multiple of `round_to` (as rounded_keep steps), that are at
    least `least`: rounding never takes a group past its cap."""
    step = round_to if total > round_to else 1
    return int(min(-(-least // step) * step, total))


def capped_keep(dep: Dependency, grp, ratio: float, round_to: int, least: int = 0, min_channels: int = 1) -> int:
    """Channels `grp` keeps with `ratio` of them removed: rounded to its width step (width_step.py), at least
    `min_channels`, and never under `least` (the per-group cap, refine.least_widths), rounding up to reach it."""
    step = group_step(dep, grp, round_to)
    return max(rounded_keep(grp.size, ratio, step), min(min_channels, grp.size), rounded_up(grp.size, least, step))


def _check(ratio: float, round_to: int) -> None:
    if not 0.0 <= ratio < 1.0:
        raise BadInputError(f"ratio must be in [0, 1), got {ratio}")
    if round_to < 1:
        raise BadInputError(f"--round-to must be a positive integer, got {round_to}")


def excluded_groups(dep: Dependency, patterns: list[str] | None) -> set[int]:
    """Groups with a slot on a tensor, or a node, whose name matches an --exclude pattern."""
    if not patterns:
        return set()
    hit = set()
    tensors_of_node = {}
    for node in dep.graph.nodes:
        if any(fnmatch.fnmatch(node.name, p) for p in patterns):
            for t in node.inputs + node.outputs:
                tensors_of_node[t] = True
    for grp in dep.groups:
        if any(s.tensor in tensors_of_node or any(fnmatch.fnmatch(s.tensor, p) for p in patterns) for s in grp.slots):
            hit.add(grp.id)
    return hit


def _drop_lowest(removed, grp, scores, keep):
    candidates = grp.channels[~grp.frozen]
    drop = min(grp.size - keep, len(candidates))
    if drop > 0:
        order = np.argsort(scores[candidates], kind="stable")
        removed[candidates[order[:drop]]] = True


def select_uniform(dep: Dependency, scores: np.ndarray, ratio: float, round_to: int = 1,
                   exclude: list[str] | None = None, min_channels: int = 1, skip: set[int] = frozenset()) -> Plan:
    """Local scope: every unfrozen group (but those in `skip`) loses `ratio` of its channels, lowest scores first."""
    _check(ratio, round_to)
    skip = excluded_groups(dep, exclude) | set(skip)
    removed = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        if grp.prunable == 0 or grp.id in skip or ratio == 0:
            continue
        keep = capped_keep(dep, grp, ratio, round_to, min_channels=min_channels)
        _drop_lowest(removed, grp, scores, keep)
    return Plan(dep, removed, {"ratio": ratio, "round_to": round_to, "scope": "local"})


def select_global(dep: Dependency, scores: np.ndarray, ratio: float, round_to: int = 1,
                  max_layer_ratio: float = 0.9, exclude: list[str] | None = None, min_channels: int = 1,
                  normalize: bool = True, channel_costs: dict[int, float] | None = None,
                  skip: set[int] = frozenset(), floors: dict[int, int] | None = None) -> Plan:
    """Global scope: one ranking of all prunable channels (each group's scores divided by the
    group's mean), the lowest `ratio` of them removed, no group losing more than `max_layer_ratio`;
    then each group's kept width is rounded to `round_to` (up where rounding would pass the cap). With `channel_costs` (group -> time a
    channel costs) the ranking is importance per unit of cost, so pruning goes where the time is.
    Groups in `skip` keep every channel; `floors` raises a group's least width (refine.least_widths)."""
    _check(ratio, round_to)
    skip = excluded_groups(dep, exclude) | set(skip)
    normalised = np.zeros(dep.num_channels)
    candidates = []
    relative = _relative_costs(channel_costs)
    for grp in dep.groups:
        if grp.prunable == 0 or grp.id in skip:
            continue
        free = grp.channels[~grp.frozen]
        mean = float(scores[free].mean()) if normalize else 1.0
        normalised[free] = (scores[free] / mean if mean > 0 else scores[free]) / relative.get(grp.id, 1.0)
        candidates.append(free)
    removed = np.zeros(dep.num_channels, dtype=bool)
    if not candidates or ratio == 0:
        return Plan(dep, removed, {"ratio": ratio, "round_to": round_to, "scope": "global"})
    pool = np.concatenate(candidates)
    budget = int(round(ratio * len(pool)))
    order = pool[np.argsort(normalised[pool], kind="stable")]
    taken = {grp.id: 0 for grp in dep.groups}
    least = least_widths(dep, max_layer_ratio, min_channels, floors)
    caps = {grp.id: grp.size - least[grp.id] for grp in dep.groups}
    for c in order:
        if budget <= 0:
            break
        gid = int(dep.channel_group[c])
        if taken[gid] < caps[gid]:
            removed[c] = True
            taken[gid] += 1
            budget -= 1
    final = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        if taken.get(grp.id, 0) == 0:
            continue
        keep = capped_keep(dep, grp, taken[grp.id] / grp.size, round_to, least[grp.id], min_channels)
        _drop_lowest(final, grp, normalised, keep)
    return Plan(dep, final, {"ratio": ratio, "round_to": round_to, "scope": "global", "max_layer_ratio": max_layer_ratio})


def _relative_costs(costs: dict[int, float] | None) -> dict[int, float]:
    """Each group's cost over the mean; a group that saves (almost) nothing is floored, not infinite."""
    if not costs:
        return {}
    mean = float(np.mean(list(costs.values())))
    if mean <= 0:
        return {}
    return {g: max(c, 1e-3 * mean) / mean for g, c in costs.items()}


# ---- closed-form cost estimates --------------------------------------------------------------

class CostModel:
    """Parameters and MACs after removing channels, from each slot's kept fraction.

    A weight's size scales with the kept fraction of each of its slots; a weight-bearing op's MACs
    scale with its weight; a MatMul of two activations scales with its output slots and the
    contracted axis.
    """

    def __init__(self, dep: Dependency):
        self.dep = dep
        g = dep.graph
        self.slots_of: dict[str, list[Slot]] = {}
        for s in dep.slots:
            self.slots_of.setdefault(s.tensor, []).append(s)
        quantized = {n.inputs[0]: n.outputs[0] for n in g.nodes if n.op == "DequantizeLinear"}
        self.params = {n: int(np.prod(shape)) for n, shape, dtype in sizes(g.constants)
                       if len(shape) >= 1 and (np.issubdtype(dtype, np.floating) or n in quantized)}
        source = {out: q for q, out in quantized.items() if q in self.params}  # QDQ weight -> its int8 constant
        per_node = count_macs(g, per_node=True)
        self.terms = []  # (macs, tensors whose slots scale it, contracted slot or None)
        self.term_nodes: list[int] = []  # the node of each term
        for node in g.nodes:
            macs = per_node.get(node.name)
            if not macs:
                continue
            inputs = [source.get(t, t) for t in node.inputs]
            weights = [t for t in inputs[1:2] if t in self.params]
            if node.op in ("LSTM", "GRU", "RNN"):
                weights = [t for t in inputs[1:3] if t in self.params]
            if weights:
                self.terms.append((macs, weights, None))
            else:
                a = node.inputs[0]
                rank = len(g.shape(a)) if g.shape(a) else 0
                self.terms.append((macs, [node.outputs[0]], Slot(a, rank - 1) if rank else None))
            self.term_nodes.append(node.index)
        self.total_params = sum(self.params.values())
        self.total_macs = sum(m for m, _, _ in self.terms)

    def _fractions(self, removed: np.ndarray) -> SlotView:
        """Kept fraction per slot, read as a dict (select/slot_fractions.py: whole-array passes)."""
        return SlotView(self._vectors.fractions(removed), self._vectors.position)

    @functools.cached_property
    def _vectors(self) -> SlotFractions:
        return SlotFractions(self.dep, self.slots_of)

    def _scale(self, tensor: str, frac: dict[Slot, float]) -> float:
        return float(np.prod([frac[s] for s in self.slots_of.get(tensor, [])])) if tensor in self.slots_of else 1.0

    def params_after(self, removed: np.ndarray) -> float:
        frac = self._fractions(removed)
        return sum(size * self._scale(t, frac) for t, size in self.params.items())

    def _kept(self, term, frac: dict[Slot, float]) -> float:
        _, tensors, contracted = term
        if contracted is None:
            return sum(self.params[t] * self._scale(t, frac) for t in tensors) / sum(self.params[t] for t in tensors)
        return self._scale(tensors[0], frac) * frac.get(contracted, 1.0)

    def macs_after(self, removed: np.ndarray) -> float:
        frac = self._fractions(removed)
        return sum(term[0] * self._kept(term, frac) for term in self.terms)

    def node_work(self, removed: np.ndarray) -> dict[int, float]:
        """Per node, the kept share of its work: of its MACs, or of its first output for ops without."""
        frac = self._fractions(removed)
        work = self._vectors.node_scales(self._vectors.scales(frac.frac))
        work.update({index: self._kept(term, frac) for index, term in zip(self.term_nodes, self.terms)})
        return work


def search_ratio(select, cost, target: float, tolerance: float = 0.005, steps: int = 40,
                 scores: np.ndarray | None = None, round_to: int = 1, skip: set[int] | None = None,
                 normalize: bool = True, least: dict[int, int] | None = None) -> Plan:
    """Bisect the share removed so that `cost(plan)` (a kept fraction) lands on `target`.

    `select(ratio)` builds a plan; rounding makes the cost a step function, so when no share hits
    the target the closest plan is refined a width step at a time (select/refine.py: each
    step the least damaging per unit of cost among those that shrink the gap; groups in `skip` untouched,
    none under its `least` width).
    """
    if not 0.0 < target < 1.0:
        raise BadInputError(f"targets are fractions kept, strictly between 0 and 1; got {target}")
    lo, hi = 0.0, 0.999
    best, best_gap = None, float("inf")
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = select(mid)
        kept = cost(plan)
        gap = abs(kept - target)
        if gap < best_gap:
            best, best_gap = plan, gap
        if gap <= tolerance:
            break
        if kept > target:
            lo = mid
        else:
            hi = mid
    if best_gap > tolerance and scores is not None:
        best = refine_weighted(best, scores, cost, target, round_to, tolerance, skip=skip, normalize=normalize,
                               least=least)
    best.options["target_kept"] = target
    best.options["estimated_kept"] = cost(best)
    best.options["target_met"] = abs(best.options["estimated_kept"] - target) <= TARGET_TOLERANCE
    return best


def check_countable(costs: CostModel, kind: str, notes: list[str]) -> None:
    """A MACs or parameter target is a fraction of what the analysis counts; with nothing counted (the
    whole network inside If branches, which are not analysed) no fraction means anything: bad input."""
    if (costs.total_macs if kind == "macs" else costs.total_params) > 0:
        return
    why = next((n for n in notes if "not analysed" in n), "")
    raise BadInputError(f"--target-{kind}: the analysed graph has no {'MACs' if kind == 'macs' else 'parameters'} "
                        f"to keep a fraction of{' (' + why + ')' if why else ''}; see `onnxprune inspect`")
