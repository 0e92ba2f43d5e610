"""The stages `prune()` composes, each public so pipelines and schedules can call them one by one:

    prep = prepare(model, options, calib)        load, fold, analyse, gather calibration statistics
    plan = choose_plan(prep, options)            score channels and select them to meet the target
    pruned = apply_and_recover(prep, plan)       rewrite the graph, re-solve consumers, validate
    pruned, fragment = finetune_model(...)       optional in-graph training
    report = evaluate(...) + describe(...)       cost, fidelity and latency against the dense model
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import onnx

from onnxprune.apply.rewrite import apply_plan
from onnxprune.check.bench import Timing, measure_latency
from onnxprune.check.replay import REPLAY_SAMPLES, Recorded
from onnxprune.check.validate import check_valid, compare, load_in_runtime
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.couple.plan import Plan, load_plan_file, plan_from_json
from onnxprune.errors import BadInputError
from onnxprune.graph.cost import count_macs, count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset, input_ranks, synthetic_dataset
from onnxprune.load.fold import fold_constants
from onnxprune.load.model import check_supported, load_model
from onnxprune.load.runtime import session
from onnxprune.load.spill import model_bytes
from onnxprune.options import FinetuneOptions, PruneOptions
from onnxprune.recover.finetune import finetune
from onnxprune.recover.reconstruction import add_missing_biases, recover
from onnxprune.recover.reconstruction import wanted_statistics as recovery_statistics
from onnxprune.score.calibration import Statistics, collect_statistics, load_calibration
from onnxprune.score.criteria import score, wanted_statistics
from onnxprune.select.latency import search_latency
from onnxprune.select.plan import CostModel, search_ratio, select_global, select_uniform
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
    input_bytes: int | None = None


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


def prepare(model_or_path, options: PruneOptions, calib=None) -> Prepared:
    """Load, fold constants, analyse the groups and gather the calibration statistics needed."""
    model, source = as_model(model_or_path)
    data = as_dataset(calib, model, options.calib_limit, options.input_shapes)
    input_shapes = options.input_shapes if options.input_shapes is not None or data is None else data.sample_shapes()
    recovery = options.recover_or_default
    if recovery != "none" and data is None:
        raise BadInputError(f"--recover {recovery} needs calibration data: pass --calib DATA.npz")
    # weights built at run time from constants (ConstantOfShape, Reshape); a model loaded here is ours to
    # fold in place, so its weights are held once (the folded model computes what the input computes)
    input_bytes = model_bytes(model)  # the report's size before: the input as given, not as folded
    working = fold_constants(model, in_place=source != IN_MEMORY)
    if recovery != "none":
        working = add_missing_biases(working, input_shapes)
    dep = build_dependency(ModelGraph(working, input_shapes))
    criterion = options.criterion_or_default
    wanted = wanted_statistics(dep, criterion) if criterion != "sensitivity" else {}
    if recovery != "none":
        for key, gram in recovery_statistics(dep, None, recovery).items():
            wanted[key] = wanted.get(key, False) or gram
    stats = collect_statistics(working, data, wanted, progress=options.progress) if wanted else None
    return Prepared(model, source, working, dep.graph, dep, data, stats, input_bytes)


def choose_plan(prep: Prepared, options: PruneOptions) -> Plan:
    """Score the channels and select them to meet the target (or re-apply a saved plan)."""
    dep, target = prep.dep, options.target
    if target.kind == "plan":
        plan = target.plan
        chosen = plan_from_json(dep, plan if isinstance(plan, dict) else load_plan_file(plan))
    else:
        select, scores = _selector(prep, options)
        if target.kind in ("macs", "params"):
            costs = CostModel(dep)
            fraction = ((lambda p: costs.macs_after(p.removed) / costs.total_macs) if target.kind == "macs"
                        else (lambda p: costs.params_after(p.removed) / costs.total_params))
            chosen = search_ratio(select, fraction, target.value, scores=scores, round_to=options.round_to)
        elif target.kind == "latency":
            recovery = options.recover_or_default
            chosen = search_latency(select, prep.dep, prep.working, target.value, options.threads_capped(),
                                    lambda p: _recovered(prep, p, recovery))
        else:
            chosen = select(float(target.ratio))
    chosen.options.update({"criterion": options.criterion_or_default, "scope": options.scope_or_default,
                           "recover": options.recover_or_default, "round_to": options.round_to})
    if chosen.options.get("target_met") is False:
        log.warning("target not met: the closest plan keeps %.3f (target %.3f); frozen channels or width rounding "
                    "limit it (see `onnxprune inspect`)", chosen.options["estimated_kept"], chosen.options["target_kept"])
    return chosen


def _selector(prep: Prepared, options: PruneOptions):
    """select(share) -> Plan for the chosen criterion and scope, and the channel scores it ranks by."""
    dep, criterion = prep.dep, options.criterion_or_default
    caps = dict(round_to=options.round_to, min_channels=options.min_channels)
    if criterion == "sensitivity":  # one fidelity-drop tolerance for every group
        if prep.data is None:
            raise BadInputError("criterion 'sensitivity' needs calibration data: pass --calib DATA.npz")
        rows = group_sensitivity(dep, prep.data.take(64), progress=options.progress)
        scores = score(dep, "l2")
        return (lambda share: select_by_sensitivity(dep, rows, scores, share, options.round_to,
                                                    options.max_layer_ratio, options.min_channels)), scores
    scores = score(dep, criterion, stats=prep.stats, seed=options.seed, data=prep.data)
    exclude = list(options.exclude)
    if options.scope_or_default == "global":
        return (lambda share: select_global(dep, scores, share, max_layer_ratio=options.max_layer_ratio,
                                            exclude=exclude, **caps)), scores
    return (lambda share: select_uniform(dep, scores, share, exclude=exclude, **caps)), scores


def _recovered(prep: Prepared, plan: Plan, recovery: str) -> onnx.ModelProto:
    overrides = recover(prep.dep, plan.removed, prep.stats, recovery) if recovery != "none" else None
    return apply_plan(plan, overrides)


def apply_and_recover(prep: Prepared, plan: Plan, options: PruneOptions) -> onnx.ModelProto:
    """The pruned model: constants sliced, consumers re-solved, checked valid against the input."""
    pruned = _recovered(prep, plan, options.recover_or_default)
    check_valid(pruned, prep.model)
    return pruned


def finetune_model(model: onnx.ModelProto, tune: FinetuneOptions, train, *, teacher: onnx.ModelProto | None = None,
                   val=None, seed: int = 0, threads: int = 0, progress: bool = False) -> tuple[onnx.ModelProto, dict]:
    """Train `model` in ONNX Runtime on `train` (any data source): distillation from `teacher`, or
    cross-entropy on the data's labels; the trained model and the report's `finetune` fragment."""
    train = as_dataset(train, model)
    if train is None:
        raise BadInputError("fine-tuning needs training data: pass --calib or --train-data DATA.npz")
    if tune.labels and train.labels is None:
        raise BadInputError("--labels needs a 'labels' array in the training data")
    result = finetune(model, train, tune.epochs, loss=tune.loss, teacher=None if tune.labels else teacher,
                      lr=tune.lr, batch_size=tune.batch_size, val_data=as_dataset(val, model), seed=seed,
                      progress=progress, threads=threads)
    history = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history]
    return result.model, {"epochs": tune.epochs, "loss": tune.loss, "lr": tune.lr, "samples": len(train),
                          "best_epoch": result.best_epoch, "history": history}


@dataclass
class Reference:
    """The dense model's outputs on the evaluation data, recorded once (and its latency), so the
    dense session is gone before the pruned model is built or run."""

    outputs: Recorded
    data: Dataset
    data_kind: str
    feed: dict | None
    timing: Timing | None


def record_dense(dense: onnx.ModelProto, input_shapes, data: Dataset | None, bench_rounds: int = 20,
                 threads: int = 0) -> Reference:
    """Run the dense model once over `data` (synthetic inputs if None) and release its session."""
    sess = session(dense, threads)
    data_kind = "given" if data is not None else "synthetic"
    if data is None:
        data = synthetic_dataset(sess, input_shapes, samples=8)
    feed = next(data.take(1).batches(1)) if bench_rounds > 0 else None
    timing = measure_latency([sess], feed, rounds=bench_rounds)[0][0] if feed else None
    return Reference(Recorded(sess, data), data, data_kind, feed, timing)


def evaluate(dense: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes, data: Dataset | None,
             bench_rounds: int = 20, threads: int = 0, dense_graph: ModelGraph | None = None,
             dense_bytes: int | None = None, reference: Reference | None = None) -> dict:
    """Before/after cost, fidelity on `data` (synthetic inputs if None) and interleaved latency.
    `dense_graph` (the folded dense model's graph) saves analysing the dense model again;
    `dense_bytes` is the input's size if `dense` was folded in place. Large models are run one at
    a time (see `one_at_a_time`; `reference` if the caller recorded the dense run already): the
    latency is then two separate measurements, not interleaved pairs."""
    dense_graph = dense_graph or ModelGraph(fold_constants(dense), input_shapes)  # run-time weights count
    pruned_graph = ModelGraph(pruned, input_shapes)
    before = {"params": count_params(dense_graph), "macs": count_macs(dense_graph), "size_bytes": dense_bytes or model_bytes(dense)}
    after = {"params": count_params(pruned_graph), "macs": count_macs(pruned_graph), "size_bytes": model_bytes(pruned)}
    del dense_graph, pruned_graph
    if reference is None and one_at_a_time(before["params"], data):
        reference = record_dense(dense, input_shapes, data, bench_rounds, threads)
    if reference is not None:
        data, data_kind, feed = reference.data, reference.data_kind, reference.feed
        pruned_sess = load_in_runtime(pruned, threads)
        fidelity = compare(reference.outputs, pruned_sess, data)
        if feed:
            pruned_timing = measure_latency([pruned_sess], feed, rounds=bench_rounds)[0][0]
            timings = [reference.timing, pruned_timing]
            ratios = [1.0, pruned_timing.p50_ms / reference.timing.p50_ms]
    else:
        dense_sess = session(dense, threads)
        data_kind = "given" if data is not None else "synthetic"
        if data is None:
            data = synthetic_dataset(dense_sess, input_shapes, samples=8)
        feed = next(data.take(1).batches(1)) if bench_rounds > 0 else None
        pruned_sess = load_in_runtime(pruned, threads)
        fidelity = compare(dense_sess, pruned_sess, data)
        if feed:
            timings, ratios = measure_latency([dense_sess, pruned_sess], feed, rounds=bench_rounds)
    report = {"before": before, "after": after,
              "fidelity": {"data": data_kind, "samples": len(data), **fidelity.as_dict()},
              "validation": {"checker": "passed", "onnxruntime": "passed", "interface": "unchanged"}}
    if feed:
        report["before"]["latency_ms"] = round(timings[0].p50_ms, 4)
        report["after"]["latency_ms"] = round(timings[1].p50_ms, 4)
        report["latency_ratio"] = round(ratios[1], 4)
    return report


ONE_AT_A_TIME_PARAMS = 64_000_000  # 256 MB of float32 weights: above it, never two models in ORT at once


def one_at_a_time(dense_params: int, data: Dataset | None) -> bool:
    """Whether to record the dense outputs and release its session before the pruned one is built."""
    return dense_params > ONE_AT_A_TIME_PARAMS and (data is None or len(data) <= REPLAY_SAMPLES)


def describe(prep: Prepared, plan: Plan, options: PruneOptions) -> dict:
    """The report's header: schema, input, the options as run and the plan's summary."""
    target = options.target
    return {"schema": REPORT_SCHEMA, "input": prep.source,
            "options": {"ratio": target.ratio, "target_macs": target.macs, "target_params": target.params,
                        "target_latency": target.latency, "round_to": options.round_to,
                        "criterion": options.criterion_or_default, "scope": options.scope_or_default,
                        "max_layer_ratio": options.max_layer_ratio, "recover": options.recover_or_default,
                        "exclude": list(options.exclude), "seed": options.seed,
                        "input_shapes": {k: list(v) for k, v in prep.graph.input_shapes.items()}},
            "plan": plan.summary()}
