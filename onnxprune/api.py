"""The library entry point: `prune(model_or_path, ...)` returns the model, the plan and the report."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import onnx

from .bench import count_macs, count_params, measure_latency, model_size
from .calibration import collect_statistics, load_calibration
from .data import Dataset, load_npz, synthetic_dataset
from .dependency import Dependency, build_dependency
from .defaults import resolve
from .errors import BadInputError
from .fold import fold_constants
from .graph import ModelGraph
from .importance import score, wanted_statistics
from . import obs as _obs  # noqa: F401  (registers the 'obs' criterion)
from .model import check_supported, load_model
from .plan import CostModel, Plan, load_plan_file, plan_from_json, search_ratio, select_global, select_uniform
from .recover import METHODS, add_missing_biases
from .recover import recover as recover_weights
from .recover import wanted_statistics as recovery_statistics
from .rewrite import apply_plan
from .sensitivity import group_sensitivity, select_by_sensitivity
from .runtime import session
from .validate import check_valid, compare, load_in_runtime

REPORT_SCHEMA = "onnxprune.report/1"
DEFAULT_ROUND_TO = 8
SCOPES = ("local", "global", "damage")
RECOVERY = METHODS + ("sequential",)  # sequential: re-solve layer by layer on the pruned model (sequential.py)


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan | None
    report: dict = field(default_factory=dict)
    masks: dict | None = None  # weight name -> keep mask, for sparsity


def as_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    if isinstance(model_or_path, onnx.ModelProto):
        check_supported(model_or_path)
        return model_or_path, "<in-memory model>"
    return load_model(model_or_path), str(model_or_path)


def as_dataset(data: Dataset | str | os.PathLike | None, g: ModelGraph) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    ranks = {name: len(g.input_shapes[name]) for name in g.inputs}
    return load_npz(data, ranks)


def analyse(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Dependency:
    """The model's coupled channel groups and barriers (after folding constant subgraphs)."""
    return build_dependency(ModelGraph(fold_constants(model), input_shapes))


def prune(model_or_path: onnx.ModelProto | str | os.PathLike, ratio: float | None = None, *,
          calib=None, round_to: int = DEFAULT_ROUND_TO, criterion: str | None = None, scope: str | None = None,
          max_layer_ratio: float = 0.9, min_channels: int = 1, exclude: list[str] | None = None,
          target_macs: float | None = None, target_params: float | None = None,
          target_latency: float | None = None, recover: str | None = None, plan: dict | str | os.PathLike | None = None,
          input_shapes: Mapping[str, tuple[int, ...]] | None = None, calib_limit: int | None = None,
          eval_data=None, finetune_epochs: int = 0, train_data=None, val_data=None, labels: bool = False,
          lr: float = 1e-3, batch_size: int = 64, bench_rounds: int = 20, threads: int = 0, seed: int = 0,
          progress: bool = False) -> PruneResult:
    """Prune channels, recover, then validate and measure the result against the dense model.

    Say how much with exactly one of: `ratio` (share of each group's channels, or of all channels
    with scope="global"), `target_macs` / `target_params` (fraction kept), `target_latency`
    (fraction of the dense ONNX Runtime latency, searched by measurement) or `plan` (a saved plan).
    `calib` (a .npz, a folder, feed dicts or a CalibrationDataReader) drives data criteria,
    recovery ("bias", "lstsq", "sequential") and, unless `eval_data` (same forms; labels give accuracy)
    is given, the fidelity report. `criterion`, `scope` and `recover` left as None take the data-aware
    defaults when `calib` is given and the data-free ones otherwise (defaults.py). `finetune_epochs` > 0 then trains the pruned graph in ONNX Runtime on
    `train_data` (default: `calib`), distilling from the dense model (no labels needed) or, with
    `labels=True`, on the data's labels; `val_data` picks the best epoch. Raises BadInputError for unusable input and
    ValidationError if the pruned model is invalid.
    """
    given = [n for n, v in (("ratio", ratio), ("target_macs", target_macs), ("target_params", target_params),
                            ("target_latency", target_latency), ("plan", plan)) if v is not None]
    if len(given) != 1:
        raise BadInputError("say how much to prune with exactly one of --ratio, --target-macs, --target-params, "
                            f"--target-latency or --plan (got {', '.join(given) or 'none'})")
    if ratio is not None and not 0.0 < float(ratio) < 1.0:
        raise BadInputError(f"ratio must be strictly between 0 and 1, got {ratio}")
    criterion, scope, recover = resolve(criterion, scope, recover, calib is not None)
    if scope not in SCOPES:
        raise BadInputError(f"scope must be one of {', '.join(SCOPES)}, got '{scope}'")
    if recover not in RECOVERY:
        raise BadInputError(f"unknown recovery '{recover}'; choose one of {', '.join(RECOVERY)}")
    model, source = as_model(model_or_path)
    probe = ModelGraph(model, input_shapes)
    data = None
    if calib is not None:
        data = load_calibration(calib, {n: len(probe.input_shapes[n]) for n in probe.inputs}, limit=calib_limit)
        if input_shapes is None:
            input_shapes = data.sample_shapes()
    if recover != "none" and data is None:
        raise BadInputError(f"--recover {recover} needs calibration data: pass --calib DATA.npz")
    working = fold_constants(model)  # weights built at run time from constants (ConstantOfShape, Reshape)
    if recover != "none":
        working = add_missing_biases(working, input_shapes)
    g = ModelGraph(working, input_shapes)
    dep = build_dependency(g)
    wanted = wanted_statistics(dep, criterion) if criterion != "sensitivity" else {}
    if recover in METHODS and recover != "none":  # one-shot recovery reads dense statistics
        for key, gram in recovery_statistics(dep, None, recover).items():
            wanted[key] = wanted.get(key, False) or gram
    stats = collect_statistics(working, data, wanted, progress=progress,
                               shapes={t: g.shape(t) for t, _ in wanted}) if wanted else None
    scores, rows = _scores(dep, criterion, stats, data, seed, progress)
    if scope == "damage":  # shares from each group's measured damage with its consumers re-solved
        if data is None:
            raise BadInputError("scope 'damage' needs calibration data: pass --calib DATA.npz")
        from .damage import group_damage
        rows = group_damage(dep, data, scores, progress=progress)

    def select(share: float) -> Plan:
        if rows is not None:  # sensitivity: one fidelity-drop tolerance for every group
            return select_by_sensitivity(dep, rows, scores, share, round_to, max_layer_ratio, min_channels)
        if scope == "global":
            return select_global(dep, scores, share, round_to, max_layer_ratio, exclude, min_channels)
        return select_uniform(dep, scores, share, round_to, exclude, min_channels)

    if plan is not None:
        chosen = plan_from_json(dep, plan if isinstance(plan, dict) else load_plan_file(plan))
    elif target_macs is not None or target_params is not None:
        costs = CostModel(dep)
        if target_macs is not None:
            chosen = search_ratio(select, lambda p: costs.macs_after(p.removed) / costs.total_macs, target_macs,
                                  scores=scores, round_to=round_to)
        else:
            chosen = search_ratio(select, lambda p: costs.params_after(p.removed) / costs.total_params,
                                  target_params, scores=scores, round_to=round_to)
    elif target_latency is not None:
        chosen = _search_latency(select, dep, working, recover, stats, target_latency, threads, input_shapes, data)
    elif scope == "damage":  # the share of channels removed, spent where it does least damage
        chosen = search_ratio(select, lambda p: 1.0 - float(p.removed.mean()), 1.0 - float(ratio),
                              scores=scores, round_to=round_to)
    else:
        chosen = select(float(ratio))
    chosen.options.update({"criterion": criterion, "scope": scope, "recover": recover, "round_to": round_to})
    if chosen.options.get("target_met") is False:
        logging.getLogger("onnxprune").warning(
            "target not met: the closest plan keeps %.3f (target %.3f); frozen channels or width rounding limit it "
            "(see `onnxprune inspect`)", chosen.options["estimated_kept"], chosen.options["target_kept"])
    overrides = _recover(dep, chosen.removed, stats, recover, data, progress)
    pruned = apply_plan(chosen, overrides)
    check_valid(pruned, model)
    ranks = {n: len(g.input_shapes[n]) for n in g.inputs}
    training = None
    if finetune_epochs:
        pruned, training = _finetune(pruned, model, train_data if train_data is not None else data, ranks,
                                     finetune_epochs, val_data, labels, lr, batch_size, seed, progress, threads)
        check_valid(pruned, model)
    evaluation = load_calibration(eval_data, ranks) if eval_data is not None else data
    report = evaluate(model, pruned, g.input_shapes, evaluation, bench_rounds, threads)
    report.update({"schema": REPORT_SCHEMA, "input": source,
                   "options": {"ratio": ratio, "target_macs": target_macs, "target_params": target_params,
                               "target_latency": target_latency, "round_to": round_to, "criterion": criterion,
                               "scope": scope, "max_layer_ratio": max_layer_ratio, "recover": recover,
                               "exclude": exclude or [], "seed": seed,
                               "input_shapes": {k: list(v) for k, v in g.input_shapes.items()}},
                   "plan": chosen.summary()})
    if training is not None:
        report["finetune"] = training
    return PruneResult(pruned, chosen, report)


def _finetune(pruned, dense, train, ranks, epochs, val, labels, lr, batch_size, seed, progress, threads):
    """Train the pruned graph in ONNX Runtime; returns the model and a report fragment."""
    from .autodiff import finetune

    if train is None:
        raise BadInputError("fine-tuning needs training data: pass --calib or --train-data DATA.npz")
    train = load_calibration(train, ranks)
    if labels and train.labels is None:
        raise BadInputError("--labels needs a 'labels' array in the training data")
    val = load_calibration(val, ranks) if val is not None else None
    result = finetune(pruned, train, epochs, loss="cross_entropy" if labels else "distill",
                      teacher=None if labels else dense, lr=lr, batch_size=batch_size, val_data=val, seed=seed,
                      progress=progress, threads=threads)
    return result.model, {"epochs": epochs, "loss": "cross_entropy" if labels else "distill", "lr": lr,
                          "samples": len(train), "best_epoch": result.best_epoch,
                          "history": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()}
                                      for h in result.history]}


def _scores(dep: Dependency, criterion: str, stats, data, seed: int, progress: bool):
    """Channel scores, and for the sensitivity criterion the per-group curves that allocate them."""
    if criterion == "sensitivity":
        if data is None:
            raise BadInputError("criterion 'sensitivity' needs calibration data: pass --calib DATA.npz")
        rows = group_sensitivity(dep, data.take(64), progress=progress)
        return score(dep, "l2"), rows
    return score(dep, criterion, stats=stats, seed=seed, data=data), None


def _recover(dep: Dependency, removed, stats, recover: str, data, progress: bool = False) -> dict | None:
    """Replacement weights for the chosen removal: one-shot from dense statistics, or sequential."""
    if recover == "none":
        return None
    if recover == "sequential":
        from .sequential import reconstruct
        return reconstruct(dep, removed, data, progress=progress)
    return recover_weights(dep, removed, stats, recover)


def _search_latency(select, dep, working, recover, stats, target, threads, input_shapes, data=None,
                    steps: int = 7) -> Plan:
    """Bisect the share removed on measured ONNX Runtime latency (interleaved with the dense model)."""
    if not 0.0 < target < 1.0:
        raise BadInputError(f"--target-latency is a fraction of the dense latency in (0, 1), got {target}")
    dense = session(working, threads)
    feed = next(synthetic_dataset(dense, dep.graph.input_shapes, samples=1).batches(1))
    lo, hi, best, best_gap = 0.0, 0.95, None, float("inf")
    for _ in range(steps):
        mid = (lo + hi) / 2
        plan = select(mid)
        overrides = _recover(dep, plan.removed, stats, recover, data)
        candidate = session(apply_plan(plan, overrides), threads)
        _, ratios = measure_latency([dense, candidate], feed, rounds=30, warmup=10)  # new sessions start slow
        measured = ratios[1]
        if abs(measured - target) < best_gap:
            best, best_gap = plan, abs(measured - target)
            best.options["measured_latency_ratio"] = measured
        lo, hi = (mid, hi) if measured > target else (lo, mid)
    best.options["target_latency"] = target
    return best


def evaluate(dense: onnx.ModelProto, pruned: onnx.ModelProto, input_shapes, data: Dataset | None,
             bench_rounds: int = 20, threads: int = 0) -> dict:
    """Before/after cost, fidelity on `data` (synthetic inputs if None) and interleaved latency."""
    # weights made at run time from constants count as parameters: measure the folded graphs
    dense_graph = ModelGraph(fold_constants(dense), input_shapes)
    pruned_graph = ModelGraph(pruned, input_shapes)
    dense_sess = session(dense, threads)
    pruned_sess = load_in_runtime(pruned, threads)
    if data is None:
        data = synthetic_dataset(dense_sess, input_shapes, samples=8)
        data_kind = "synthetic"
    else:
        data_kind = "given"
    fidelity = compare(dense_sess, pruned_sess, data)
    report = {"before": {"params": count_params(dense_graph), "macs": count_macs(dense_graph), "size_bytes": model_size(dense)},
              "after": {"params": count_params(pruned_graph), "macs": count_macs(pruned_graph), "size_bytes": model_size(pruned)},
              "fidelity": {"data": data_kind, "samples": len(data), **fidelity.as_dict()},
              "validation": {"checker": "passed", "onnxruntime": "passed", "interface": "unchanged"}}
    if bench_rounds > 0:
        feed = next(data.take(1).batches(1))
        timings, ratios = measure_latency([dense_sess, pruned_sess], feed, rounds=bench_rounds)
        report["before"]["latency_ms"] = round(timings[0].p50_ms, 4)
        report["after"]["latency_ms"] = round(timings[1].p50_ms, 4)
        report["latency_ratio"] = round(ratios[1], 4)
    return report


def sparsify(model_or_path, sparsity: float | dict[str, float], *, scope: str = "local", pattern: str = "unstructured",
             sparse_initializers: bool = False, eval_data=None, input_shapes=None) -> PruneResult:
    """Zero the smallest weights of conv and linear layers; `sparsity` may be {"conv": s, "linear": s}.

    The result's plan is None; its report has the achieved sparsity, raw and zip-compressed sizes
    and the fidelity against the dense model.
    """
    from .sparsity import apply_masks, magnitude_masks, sparsity_report, to_sparse_initializers, zipped_size

    model, source = as_model(model_or_path)
    working = fold_constants(model)
    g = ModelGraph(working, input_shapes)
    masks = magnitude_masks(g, sparsity, scope, pattern)
    sparse = apply_masks(working, masks)
    check_valid(sparse, model)
    data = load_calibration(eval_data, {n: len(g.input_shapes[n]) for n in g.inputs}) if eval_data is not None else None
    dense_sess = session(model)
    if data is None:
        data = synthetic_dataset(dense_sess, g.input_shapes, samples=8)
    fidelity = compare(dense_sess, load_in_runtime(sparse), data)
    stored = to_sparse_initializers(sparse) if sparse_initializers else sparse
    report = {"schema": REPORT_SCHEMA, "input": source, "options": {"sparsity": sparsity, "scope": scope,
              "pattern": pattern, "sparse_initializers": sparse_initializers},
              "sparsity": sparsity_report(stored, masks), "dense_zip_bytes": zipped_size(model.SerializeToString()),
              "fidelity": fidelity.as_dict()}
    return PruneResult(stored, None, report, masks)
