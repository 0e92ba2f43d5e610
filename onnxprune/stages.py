"""The stages `prune()` composes, each public so pipelines and schedules can call them one by one:

    prep = prepare(model, options, calib)        load, fold, analyse, gather calibration statistics
    plan = choose_plan(prep)                     score channels and select them to meet the target
    pruned = apply_and_recover(prep, plan)       rewrite the graph, re-solve consumers, validate
    pruned, fragment = finetune_model(...)       optional in-graph training
    report = evaluate(...) + describe(...)       cost, fidelity and latency (check/evaluate.py); the header
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.apply.as_run import as_run, dense_as_run
from onnxprune.apply.qdq_lower import lower
from onnxprune.apply.rewrite import apply_plan
from onnxprune.check.validate import check_valid
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan, load_plan_file, plan_from_json
from onnxprune.couple.vocabulary import Slot
from onnxprune.errors import BadInputError
from onnxprune.graph.lrn_band import lrn_as_band
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.hidden_stage import analyse_width
from onnxprune.apply.restore import drop_identity_restores
from onnxprune.load.data import Dataset, input_ranks
from onnxprune.load.views import calibration_views
from onnxprune.load.external import LAZY_BYTES, scratch, unload
from onnxprune.load.fit import PROBE_BYTES, check_fits, joins
from onnxprune.load.fold import fold_constants
from onnxprune.load.model import check_supported, load_model
from onnxprune.load.qdq_lift import lift
from onnxprune.load.qdq_params import QuantParams
from onnxprune.load.spill import model_bytes
from onnxprune.load.zoo import cache_dir
from onnxprune.options import MEASURED, PruneOptions, default_round_to, with_defaults
from onnxprune.recover.reconstruction import METHODS as ONE_SHOT, add_missing_biases, recover
from onnxprune.recover.norms import norm_overrides, wanted as norm_statistics
from onnxprune.recover.sequential import reconstruct
from onnxprune.recover.spilled import SpilledArrays
from onnxprune.recover.reconstruction import wanted_statistics as recovery_statistics
from onnxprune.score.calibration import Statistics, collect_statistics, load_calibration
from onnxprune.score.criteria import COMPARABLE, NEEDS_DATA, score, wanted_statistics
from onnxprune.score.gram_budget import within_budget
from onnxprune.score.hidden import wanted as hidden_statistics, with_stream_importance
from onnxprune.select.allocate import PriceAllocator
from onnxprune.select.costless import sparing
from onnxprune.select.damage import group_damage
from onnxprune.select.latency import most_macs, search_latency
from onnxprune.select.latency_model import LatencyModel, build_latency_model
from onnxprune.select.coverage import input_encoded_groups
from onnxprune.select.latency_profile import build_profiled_model
from onnxprune.select.mac_costs import POWERS as MAC_POWERS, auto_power, mac_costs
from onnxprune.select.plan import (CostModel, check_countable, excluded_groups, search_ratio, select_global,
                                   select_uniform)
from onnxprune.select.refine import WidthLimits, least_widths
from onnxprune.select.rewritable import unrewritable_groups
from onnxprune.select.sensitivity import group_sensitivity, select_by_sensitivity

REPORT_SCHEMA = "onnxprune.report/1"
IN_MEMORY = "<in-memory model>"
log = logging.getLogger("onnxprune")


@dataclass
class Prepared:
    """Everything the later stages read: the input model untouched, the working copy they analyse
    (constants folded, zero biases where recovery needs somewhere to write), its graph and groups,
    and the calibration data with the statistics the criterion and recovery asked for. A model
    loaded from a path is folded in place: `model` is then the folded model (same outputs)."""

    model: onnx.ModelProto
    source: str
    working: onnx.ModelProto
    graph: ModelGraph
    dep: Dependency
    data: Dataset | None
    stats: Statistics | None
    options: PruneOptions  # with the data-aware or data-free defaults filled in
    input_bytes: int | None = None  # the input's size as given (a model loaded here is folded in place)
    evaluation: Dataset | None = None  # held-out data for the report (the calibration data if none)
    rewritten: int = 0  # LRNs written as band Convs for a latency target (working runs faster than model)
    latency_reference: onnx.ModelProto | None = None  # what a latency target is timed against, if not model
    lifted: dict[str, QuantParams] = field(default_factory=dict)  # QDQ weights working holds as floats
    unrewritable: set[int] = field(default_factory=set)  # groups the rewrite cannot follow (select/rewritable.py)
    floors: dict[int, int] = field(default_factory=dict)  # group -> least width past the cap's (iterative.py)

    @property
    def samples(self) -> Dataset | None:
        """The user's calibration samples, not their views (load/views.py)."""
        return getattr(self.data, "base", self.data)


def as_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    """The model and a name for reports; a path is loaded (and never modified)."""
    if isinstance(model_or_path, onnx.ModelProto):
        check_supported(model_or_path)
        return model_or_path, IN_MEMORY
    return load_model(model_or_path), str(model_or_path)


def as_dataset(source, model: onnx.ModelProto, limit: int | None = None, input_shapes=None) -> Dataset | None:
    """Any data source (a Dataset, .npz, folder, feed dicts, CalibrationDataReader) as a Dataset."""
    if source is None:
        return None
    return load_calibration(source, input_ranks(model, input_shapes), limit=limit)


def _join_or_not(model: onnx.ModelProto, size: int, *datasets: Dataset | None) -> None:
    """Feed the data one sample at a time when the model fails on two joined (load/fit.joins)."""
    given = [d for d in datasets if d is not None]
    if given and size <= PROBE_BYTES and not joins(model, given[0]):
        log.info("the model declares a batch axis but fails on two samples joined: feeding one at a time")
        for d in given:
            d.joinable = False


def _source_name(source, default: str) -> str:
    """How messages name a data source: its path, or what it is for."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "path", default))


def prepare(model_or_path, options: PruneOptions, calib=None, eval_data=None) -> Prepared:
    """Load, fold constants, analyse the groups and gather the calibration statistics needed. The
    evaluation data is read and checked here too, so bad data fails before any work."""
    model, source = as_model(model_or_path)
    data = as_dataset(calib, model, options.calib_limit, options.input_shapes)
    evaluation = as_dataset(eval_data, model, input_shapes=options.input_shapes)
    if evaluation is not None:
        check_fits(model, evaluation, _source_name(eval_data, "--data"), shapes=options.input_shapes)
    input_bytes = model_bytes(model)  # the report's size before: the input as given, not as folded
    options = options.resolved(has_data=data is not None, weight_bytes=input_bytes)
    input_shapes = options.input_shapes if options.input_shapes is not None or data is None else data.sample_shapes()
    recovery, criterion = options.recover, options.criterion
    if data is None:  # what cannot run without calibration data, named as the user would name it
        needs = [f"--recover {recovery}"] if recovery != "none" else []
        needs += [f"criterion '{criterion}'"] if criterion in NEEDS_DATA or criterion == "sensitivity" else []
        needs += [f"scope '{options.scope}'"] if options.scope in MEASURED else []
        if needs:
            raise BadInputError(f"{needs[0]} needs calibration data: pass --calib DATA.npz")
    if data is not None:
        check_fits(model, data, _source_name(calib, "--calib"), shapes=options.input_shapes)
    _join_or_not(model, input_bytes, data, evaluation)
    samples = data  # the report is measured on the user's samples, the statistics on their views
    data = calibration_views(data, options.calib_views, options.calib_view_kinds, options.seed)
    # weights built at run time from constants (ConstantOfShape, Reshape); a model loaded here is ours to
    # fold in place, so its weights are held once (the folded model computes what the input computes)
    working = fold_constants(model, in_place=source != IN_MEMORY)
    ours = source != IN_MEMORY or working is not model  # a loaded file, or the copy folding made of the caller's
    if ours and model_bytes(working) >= LAZY_BYTES:  # its weights go to a work file, read on demand from
        model = working = unload(working)  # there on (load/external.py): held once, the caller's proto untouched
    # a QDQ model's integer weights as floats, so criteria and recovery see them (load/qdq_lift.py);
    # a copy when there are any: `model` stays the QDQ model the pruned one is checked against
    working, lifted = lift(working)
    rewritten = 0
    if options.target.kind == "latency":  # LRN as a band Conv: faster, and prunable (graph/lrn_band.py)
        working, rewritten = lrn_as_band(working, input_shapes)
    if recovery != "none":
        working = add_missing_biases(working, input_shapes)
    working, dep = analyse_width(working, input_shapes, options, data is not None)  # hidden width: hidden_stage.py
    widths = [len(g.channels) for g in dep.groups if (~g.frozen).sum() >= 2]  # the prunable groups' widths
    options = with_defaults(options, round_to=default_round_to(options.target, widths))
    wanted = wanted_statistics(dep, criterion) if criterion != "sensitivity" else {}
    extra = ({**hidden_statistics(dep), **(norm_statistics(dep) if recovery != "none" else {})}  # hidden width
             if data is not None else {})
    wanted.update({k: wanted.get(k, v) for k, v in extra.items()})
    if recovery in ONE_SHOT and recovery != "none":  # one-shot recovery reads the dense model's statistics
        for key, gram in recovery_statistics(dep, None, recovery).items():
            wanted[key] = wanted.get(key, False) or gram
    stats = None
    if wanted:
        shapes = {t: dep.graph.shape(t) for t, _ in wanted}  # bounds the memory of each statistics pass
        wanted = within_budget(wanted, shapes)  # and of the Grams it holds (score/gram_budget.py)
        stats = collect_statistics(working, data, wanted, progress=options.progress, shapes=shapes)
    return Prepared(model, source, working, dep.graph, dep, data, stats, options, input_bytes,
                    evaluation if evaluation is not None else samples, rewritten, lifted=lifted)


def _latency_reference(prep: Prepared) -> onnx.ModelProto | None:
    """The model a latency target's fraction is of, when the analysed one is not it: the user's model
    before `--depth` removed units (depth_stage.py) or before LRN became a band Conv."""
    if prep.latency_reference is not None:
        return prep.latency_reference
    return prep.model if prep.rewritten else None


def choose_plan(prep: Prepared, options: PruneOptions | None = None, scores: np.ndarray | None = None) -> Plan:
    """Score the channels (unless `scores` are given) and select them to meet the target (or re-apply a
    saved plan)."""
    with scratch():  # the candidate models a search builds are gone when it returns a plan
        return _choose_plan(prep, options, scores)


def channel_scores(prep: Prepared, options: PruneOptions) -> np.ndarray:
    """Every channel's score under `options.criterion` (not for "sensitivity", which measures groups)."""
    data = _views_or_samples(prep, options.calib_views_for, "scoring")
    return with_stream_importance(prep.dep, prep.stats, score(prep.dep, options.criterion, stats=prep.stats,
                                                              seed=options.seed, data=data))


def _choose_plan(prep: Prepared, options: PruneOptions | None = None, given: np.ndarray | None = None) -> Plan:
    options = prep.options if options is None else options.resolved(prep.data is not None, prep.input_bytes or 0)
    dep, target = prep.dep, options.target
    if target.kind == "depth":  # --depth alone: the units are gone already, no channel is removed
        chosen = Plan(dep, np.zeros(dep.num_channels, dtype=bool), {})
    elif target.kind == "plan":
        plan = target.plan
        chosen = plan_from_json(dep, plan if isinstance(plan, dict) else load_plan_file(plan))
    else:
        prep.unrewritable |= unrewritable_groups(dep, _kept_whole(prep, options), options.round_to,  # kept whole
                                                 always=target.kind == "latency")
        analysed = dense_as_run(dep, prep.lifted) if target.kind == "latency" else None  # timed as it will run
        latency = _latency_model(prep, options, analysed) if target.kind == "latency" else None
        select, scores = _selector(prep, options, latency.channel_costs() if latency else None, given)
        if target.kind in ("macs", "params"):
            select = sparing(dep, select) if target.kind == "macs" else select  # cuts that buy no MACs
            costs = CostModel(dep)
            check_countable(costs, target.kind, prep.dep.notes)
            fraction = ((lambda p: costs.macs_after(p.removed) / costs.total_macs) if target.kind == "macs"
                        else (lambda p: costs.params_after(p.removed) / costs.total_params))
            chosen = search_ratio(select, fraction, target.value, scores=scores, round_to=options.round_to,
                                  skip=_kept_whole(prep, options), normalize=options.criterion not in COMPARABLE,
                                  least=_least(prep, options))
        elif target.kind == "latency":
            allocation, select, kept = _allocation(prep, options, select, scores, latency)
            # recovery changes values, not shapes: candidates are timed unrecovered
            chosen = search_latency(select, latency, target.value, options.threads_capped(), as_run(prep.lifted),
                                    feed=_one_sample(prep), scores=scores, round_to=options.round_to,
                                    reference=_latency_reference(prep), analysed=analysed,
                                    limits=WidthLimits(_kept_whole(prep, options), _least(prep, options)))
            chosen.options.update(allocation=allocation, allocation_macs_kept=kept)
        elif options.scope in MEASURED:  # the share of channels removed, spent where it does least damage
            chosen = search_ratio(select, lambda p: 1.0 - float(p.removed.mean()), 1.0 - float(target.ratio),
                                  scores=scores, round_to=options.round_to, least=_least(prep, options))
        else:
            chosen = select(float(target.ratio))
    chosen.options.update({"criterion": options.criterion, "scope": options.scope, "recover": options.recover,
                           "round_to": options.round_to})
    if chosen.options.get("target_met") is False and target.kind != "latency":  # search_latency says it in time
        log.warning("target not met: the closest plan keeps %.3f of the %s (target %.3f); frozen channels, width "
                    "rounding or the per-layer cap (--max-layer-ratio) limit it (see `onnxprune inspect`)",
                    chosen.options["estimated_kept"], KEPT_WHAT.get(target.kind, "channels"),
                    chosen.options["target_kept"])
    if not chosen.removed.any() and target.kind not in ("plan", "depth"):  # an unchanged model must not pass for a pruned one
        from onnxprune.report.inspect import why_nothing_removed
        log.warning("removed no channels: %s", why_nothing_removed(prep.dep, options.round_to))
    return chosen


def _allocation(prep: Prepared, options: PruneOptions, select, scores, latency: LatencyModel):
    """A latency target's global ranking against uniform shares of the same scores, judged on the
    latency model by the MACs each keeps at the target (select/latency.py, most_macs); other scopes
    are the user's choice and stay."""
    if options.scope != "global":
        return options.scope, select, {}
    uniform = (lambda share: select_uniform(prep.dep, scores, share, exclude=list(options.exclude),
                                            round_to=options.round_to, min_channels=options.min_channels,
                                            skip=_kept_whole(prep, options)))
    return most_macs({"latency ranking": select, "uniform": uniform}, latency, options.target.value,
                     scores=scores, round_to=options.round_to,
                     limits=WidthLimits(_kept_whole(prep, options), _least(prep, options)))


def _one_sample(prep: Prepared) -> dict | None:
    """The first calibration sample, timed as the user's data is (a sample rate must be one)."""
    return None if prep.samples is None else next(prep.samples.take(1).batches(1))


def _latency_model(prep: Prepared, options: PruneOptions, analysed: onnx.ModelProto) -> LatencyModel:
    """Every node timed at each width on this machine (cached beside the model zoo), in the model as it
    will run (`analysed`: a QDQ model's integer kernels, not its lifted float weights')."""
    log.info("profiling latency per node at each width (cached in %s)", cache_dir() / "latency")
    skip = _kept_whole(prep, options)  # the uniform widths timed are those a selection can reach
    try:
        return build_profiled_model(prep.dep, options.threads_capped(), cache_dir() / "latency",
                                    round_to=options.round_to, show_progress=options.progress,
                                    build=as_run(prep.lifted), dense=analysed, skip=skip)
    except Exception as exc:  # noqa: BLE001  (a graph ORT cannot profile or save: each node timed alone instead)
        log.warning("latency profile failed (%s); timing each node alone%s", str(exc).splitlines()[0] if str(exc) else exc,
                    " (in float: the lifted weights, not the integer kernels)" if prep.lifted else "")
        return build_latency_model(prep.dep, options.threads_capped(), cache_dir() / "latency",
                                   show_progress=options.progress, skip=skip)


def _selector(prep: Prepared, options: PruneOptions, channel_costs: dict[int, float] | None = None,
              given: np.ndarray | None = None):
    """select(share) -> Plan for the chosen criterion and scope, and the channel scores it ranks by;
    global scope ranks by importance per unit of `channel_costs` when given (latency targets)."""
    dep, criterion = prep.dep, options.criterion
    caps = dict(round_to=options.round_to, min_channels=options.min_channels)
    if criterion == "sensitivity":
        scores = score(dep, "l2")
        rows = group_sensitivity(dep, prep.data.take(64), progress=options.progress)
    else:
        scores = channel_scores(prep, options) if given is None else given
        rows = group_damage(dep, prep.data, scores, progress=options.progress) if options.scope in MEASURED else None
    if rows is not None and options.scope == "price":  # one price: damage per MAC saved, from measured curves
        return PriceAllocator(dep, rows, scores, options.round_to, options.max_layer_ratio, options.min_channels), scores
    if rows is not None and options.scope == "damage":  # one tolerance on the per-channel output error
        rows = [dict(row, cosine={r: 1.0 - d for r, d in row["damage"].items()}) for row in rows]
    if rows is not None:  # one fidelity-drop tolerance for every group, from its measured curve
        return (lambda share: select_by_sensitivity(dep, rows, scores, share, options.round_to,
                                                    options.max_layer_ratio, options.min_channels)), scores
    exclude, caps["skip"] = list(options.exclude), _kept_whole(prep, options)
    power = auto_power(options.target.kept_share() or 0.0) if options.scope == "auto" else MAC_POWERS.get(options.scope)
    if power:  # importance per MAC saved (cost), per its square root (blend), between (auto)
        channel_costs = mac_costs(dep, power=power)
    if options.scope in ("global", "auto", *MAC_POWERS):
        return (lambda share: select_global(dep, scores, share, max_layer_ratio=options.max_layer_ratio,
                                            exclude=exclude, channel_costs=channel_costs,
                                            normalize=criterion not in COMPARABLE, floors=prep.floors, **caps)), scores
    return (lambda share: select_uniform(dep, scores, share, exclude=exclude, **caps)), scores


KEPT_WHAT = {"macs": "MACs", "params": "parameters"}  # what a target's kept fraction counts


def _least(prep: Prepared, options: PruneOptions) -> dict[int, int]:
    """Per group, the fewest channels the search's last width steps may leave (the selection's cap)."""
    return least_widths(prep.dep, options.max_layer_ratio, options.min_channels, prep.floors)


def _kept_whole(prep: Prepared, options: PruneOptions) -> set[int]:
    """Groups --exclude names, and the input encodings (select/coverage.py): neither the data nor the
    weights can judge which input values a model may stop reading."""
    return excluded_groups(prep.dep, list(options.exclude)) | input_encoded_groups(prep.dep) | prep.unrewritable


def _views_or_samples(prep: Prepared, views_for: str, step: str):
    """The calibration data `step` ("scoring" or "recovery") reads: the views where `views_for`
    (options.calib_views_for) gives them to it, else the user's samples alone."""
    if views_for in ("all", step):
        return prep.data
    return prep.samples


def _recovered(prep: Prepared, plan: Plan, recovery: str) -> onnx.ModelProto:
    """The plan applied, with the consumers re-solved: one-shot from the dense statistics, or sequential."""
    presliced = SpilledArrays()  # re-solved weights already cut, on disk: never a dense copy besides
    if recovery == "none":
        overrides = None
    elif recovery in ("sequential", "sequential_logit"):
        norms = norm_overrides(prep.dep, plan.removed, prep.stats)  # hidden width: first the norms' scale
        data = _views_or_samples(prep, prep.options.calib_views_for, "recovery")
        with scratch():  # the prefix models it runs are gone when it returns the weights
            overrides = reconstruct(prep.dep, plan.removed, data, progress=prep.options.progress, initial=norms,
                                    presliced=presliced, logit_weighted=recovery == "sequential_logit")
    else:
        overrides = {**norm_overrides(prep.dep, plan.removed, prep.stats),
                     **recover(prep.dep, plan.removed, prep.stats, recovery)}
    try:
        return apply_plan(plan, overrides, presliced=presliced) if presliced else apply_plan(plan, overrides)
    finally:
        presliced.close()


def apply_and_recover(prep: Prepared, plan: Plan, check: bool = True) -> onnx.ModelProto:
    """The pruned model: constants sliced, consumers re-solved, checked valid against the input (unless
    the caller checks it later: big graphs do, once the analysis is released)."""
    pruned = drop_identity_restores(_recovered(prep, plan, prep.options.recover))
    if prep.lifted:  # the lifted weights back to integers, re-quantized on their kept channels
        kept = prep.dep.kept_indices(plan.removed)
        pruned = lower(pruned, prep.lifted, lambda tensor, axis: kept.get(Slot(tensor, axis)))
    if check:
        check_valid(pruned, prep.model)
    return pruned


def describe(prep: Prepared, plan: Plan) -> dict:
    """The report's header: schema, input, the options as run and the plan's summary."""
    options = prep.options
    target = options.target
    return {"schema": REPORT_SCHEMA, "input": prep.source,
            "options": {"ratio": target.ratio, "target_macs": target.macs, "target_params": target.params,
                        "target_latency": target.latency, "round_to": options.round_to,
                        "criterion": options.criterion, "scope": options.scope,
                        "max_layer_ratio": options.max_layer_ratio, "recover": options.recover,
                        "exclude": list(options.exclude), "seed": options.seed, "hidden": options.hidden,
                        **({"calib_views": options.calib_views, "calib_view_kinds": list(options.calib_view_kinds),
                            "calib_views_for": options.calib_views_for} if (options.calib_views or 1) > 1 else {}),
                        "input_shapes": {k: list(v) for k, v in prep.graph.input_shapes.items()}},
            "plan": plan.summary()}
