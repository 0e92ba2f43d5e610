"""Selection on measured time: plans are searched on the latency model (select/latency_model.py, no
rewrite per step), then the chosen plan is built and timed against the dense model, interleaved; a
miss corrects the model's aim and searches again, so the measured ratio lands on the target."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import onnx

from onnxprune.check.fidelity import run_explained
from onnxprune.check.run_timing import back_to_back, warm_up
from onnxprune.couple.plan import Plan
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.runtime import session
from onnxprune.select.latency_model import LatencyModel
from onnxprune.select.plan import search_ratio
from onnxprune.select.refine import WidthLimits

log = logging.getLogger("onnxprune")

TOLERANCE = 0.05  # relative: a measured ratio within 5% of the target is a hit
ATTEMPTS = 5  # measured attempts at most
SWITCH_GAIN = 1.05  # another allocation replaces the first only if it keeps 5% more MACs at the aim
REPEAT = 3  # back-to-back runs per side and round, the fastest counts (as the search's pass and the benches)
WARMUP = 10  # untimed rounds: new sessions start slow


def most_macs(selectors: dict[str, Callable[[float], Plan]], model: LatencyModel, target: float,
              scores: np.ndarray | None = None, round_to: int = 1,
              limits: WidthLimits = WidthLimits()) -> tuple[str, Callable[[float], Plan], dict]:
    """Of several allocations (name -> select(share)), the one whose plan at `target` of the
    *predicted* latency keeps the most MACs, and each one's MACs kept there. The first is the
    default and stays unless another keeps SWITCH_GAIN times its MACs: a ranking by time per MAC
    measured once, at half of each group with the rest dense, can cut the groups whose time falls
    least as the cuts deepen (DenseNet's bottlenecks: its latency ranking kept 0.265 of the MACs
    at a predicted 0.5, uniform shares 0.328). Predictions only: nothing is built or timed."""
    kept = {}
    for name, select in selectors.items():
        plan = search_ratio(select, lambda p: model.kept(p.removed), target, scores=scores, round_to=round_to,
                            skip=limits.skip, least=limits.least)
        kept[name] = round(model.costs.macs_after(plan.removed) / max(model.costs.total_macs, 1), 4)
    first = next(iter(selectors))
    best = max(kept, key=lambda name: kept[name])
    chosen = best if kept[best] >= SWITCH_GAIN * kept[first] else first
    return chosen, selectors[chosen], kept


def search_latency(select: Callable[[float], Plan], model: LatencyModel, target: float, threads: int,
                   build: Callable[[Plan], onnx.ModelProto], scores: np.ndarray | None = None,
                   round_to: int = 1, rounds: int = 30, reference: onnx.ModelProto | None = None,
                   analysed: onnx.ModelProto | None = None, feed: dict | None = None,
                   limits: WidthLimits = WidthLimits()) -> Plan:
    """The plan whose model (`build(plan)`, same shapes as the recovered one) runs nearest `target`
    x dense latency, measured; its options record the predicted and the measured ratios. Dense is
    `reference` when given (the user's model, when the one analysed was rewritten to run faster:
    graph/lrn_band.py): the model's predictions are then scaled by the analysed model's measured
    latency against it, so the first aim already allows for the rewrite. `analysed` is the analysed
    model as it will run, when that is not the analysed model itself (a QDQ model's lifted weights
    lowered back to integers, as `build` lowers each candidate: apply/as_run.py). The refinement of a
    rounded plan leaves the groups in `limits.skip` whole and none under its least width, as every
    selection does (the MACs path's search too): without it a latency target cut a head of khmersm's attention, which the rewrite cannot follow."""
    analysed = model.dep.graph.model if analysed is None else analysed
    dense = session(reference if reference is not None else analysed, threads)
    if feed is None:  # no calibration data: a synthetic sample (`feed`: the user's first one)
        feed = next(synthetic_dataset(dense, model.dep.graph.input_shapes, samples=1).batches(1))
    run_explained(dense, feed, "dense")  # a model failing on the sample: bad input, not a crash of the timing
    scale = 1.0
    if reference is not None:  # the analysed (rewritten) model's own latency against the user's
        scale = paired_ratio(dense, session(analysed, threads), feed, rounds)
    aim, tried, aims = min(target / scale, 0.995), [], []
    cost, switched = (lambda p: model.kept(p.removed)), False  # the predicted latency kept
    for _ in range(ATTEMPTS):
        plan = search_ratio(select, cost, aim, scores=scores, round_to=round_to, skip=limits.skip, least=limits.least)
        if any(np.array_equal(plan.removed, t[1].removed) for t in tried):
            if switched or not _flat(tried[-1], target):
                break  # a new aim, the same plan (the per-layer cap or the rounding): timing it again picks noise
            # the model sees no gain where the runtime finds plenty (float16 kernels it did not profile): aim by
            # the MACs kept instead, from the target on, or the deepest plan stands however far under it lands
            log.info("latency model flat (predicted %.3f, measured %.3f): aiming by MACs", tried[-1][2], tried[-1][3])
            cost, aims, aim = (lambda p: model.costs.macs_after(p.removed) / max(model.costs.total_macs, 1)), [], target
            switched = True
            continue
        candidate = session(build(plan), threads)
        predicted, measured = model.kept(plan.removed) * scale, paired_ratio(dense, candidate, feed, rounds)
        tried.append((abs(measured - target), plan, predicted, measured))
        if abs(measured - target) <= TOLERANCE * target:
            break
        aims.append((aim, measured))
        aim = _next_aim(aims, target, scale)
    miss, best, predicted, measured = min(tried, key=lambda t: t[0])
    if miss > TOLERANCE * target:
        log.warning("latency target %.3f missed: the nearest plan measured %.3f after %d attempt(s)%s", target, measured,
                    len(tried), "; no deeper plan within --max-layer-ratio and the rounding: --depth K removes units"
                    " first" if measured > target else "")
    best.options.update(target_latency=target, predicted_latency_ratio=round(predicted, 4),
                        measured_latency_ratio=round(measured, 4),
                        latency_attempts=[{"predicted": round(p, 4), "measured": round(m, 4)} for _, _, p, m in tried])
    return best


def _flat(last: tuple, target: float) -> bool:
    """Whether the latency model's aim is useless: the plan it repeats measured far under the target
    while it predicted far over it."""
    _, _, predicted, measured = last
    return measured < target * (1 - TOLERANCE) and predicted > target * (1 + TOLERANCE)


def paired_ratio(dense, candidate, feed: dict, rounds: int, repeat: int = REPEAT) -> float:
    """Candidate over dense latency: per round each side runs `repeat` times back to back (order
    alternating by round), and the median over rounds of the ratio of each side's fastest run."""
    warm_up([dense, candidate], feed, WARMUP)
    times = np.zeros((rounds, 2, repeat))
    for r in range(rounds):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            times[r, side] = back_to_back((dense, candidate)[side], feed, repeat)
    return ratio_of_fastest(times)


def ratio_of_fastest(times: np.ndarray) -> float:
    """`times` (rounds, 2 sides, repeats), seconds: the median over rounds of the candidate's fastest
    run over dense's. Single alternating runs read the ratio nearer 1 than the benches that judge the
    landing (fastest of 3 back to back: tools/bench_latency_efficiency.py, the search's pass): every
    run pays a fixed cost the pruning does not shrink (waking the thread pool, the other model's
    data in the caches, other jobs' slices), and it inflates the smaller model's time more. A plan
    measured at 0.49 that way re-timed at 0.35-0.44 (docs/benchmarks.md, s11-lat), so the search cut
    too deep for its target and paid in efficiency."""
    fastest = times.min(axis=2)
    return float(np.median(fastest[:, 1] / fastest[:, 0]))


def _next_aim(aims: list[tuple[float, float]], target: float, scale: float = 1.0) -> float:
    """The predicted ratio to aim at next, from (aim, measured) so far: interpolated between the
    nearest aims measured below and above the target once both exist (a secant step that cannot
    oscillate out of its bracket), else scaled by the last miss (the model's error is mostly a scale:
    fused kernels and overheads it does not see). The bracket is the nearest pair of *aims*: on a
    loaded machine measurements are not monotone in the aim, and a bracket chosen by measured values
    could stay the same after a step, re-trying one plan; by aims it shrinks at every step."""
    below = [a for a in aims if a[1] < target]
    above = [a for a in aims if a[1] >= target]
    if below and above:
        (a0, m0), (a1, m1) = max(below), min(above)
        aim = a0 + (target - m0) * (a1 - a0) / (m1 - m0) if m1 > m0 and a1 > a0 else (a0 + a1) / 2
    else:
        aim, measured = aims[-1]
        aim = aim * target / measured
    # a rewritten model may run under the target before any pruning: then its whole width is an aim
    return float(np.clip(aim, 0.02, 0.98 if scale >= 1.0 else 0.995))
