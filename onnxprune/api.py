"""The library entry points: `prune`, `sparsify` and `analyse`, short compositions of the stages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import onnx

from onnxprune.apply.sparsity import apply_masks, magnitude_masks, sparsity_report, to_sparse_initializers, zipped_size
from onnxprune.check.validate import check_valid, compare, load_in_runtime
from onnxprune.couple.dependency import Dependency, build_dependency
from onnxprune.couple.plan import Plan
from onnxprune.depth_stage import remove_depth_first
from onnxprune.errors import BadInputError
from onnxprune.check.evaluate import evaluate, one_at_a_time, record_dense
from onnxprune.graph.cost import count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import synthetic_dataset
from onnxprune.load.external import inlined, materialize
from onnxprune.load.fold import fold_constants
from onnxprune.load.runtime import session
from onnxprune import lean_stage as lean
from onnxprune.options import DEFAULT_ROUND_TO, FinetuneOptions, PruneOptions, options_from_keywords
from onnxprune.finetune_stage import finetune_model
from onnxprune.stages import REPORT_SCHEMA, as_dataset, as_model, apply_and_recover, choose_plan, describe, prepare

__all__ = ["prune", "sparsify", "analyse", "PruneResult", "as_model", "evaluate", "DEFAULT_ROUND_TO", "REPORT_SCHEMA"]


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan | None
    report: dict = field(default_factory=dict)
    masks: dict | None = None  # weight name -> keep mask, for sparsity

    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the model as the CLI does: atomically, a model over 2 GB (or pruned from a file with
        external data) with its weights in `path`.data beside it. Use this rather than onnx.save for a
        model pruned from a file: its weights may live in this process's work files until written."""
        from onnxprune.load.model import save_model_atomic
        return save_model_atomic(self.model, path, force)


def analyse(model: onnx.ModelProto, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Dependency:
    """The model's coupled channel groups and barriers (after folding constant subgraphs)."""
    return build_dependency(ModelGraph(fold_constants(model), input_shapes))


def prune(model_or_path: onnx.ModelProto | str | os.PathLike, ratio: float | None = None, *, calib=None,
          eval_data=None, train_data=None, val_data=None, options: PruneOptions | None = None,
          finetune: FinetuneOptions | None = None, **keywords) -> PruneResult:
    """Prune channels, recover, optionally fine-tune, then validate and measure against the dense model.

    Say how much with exactly one of `ratio` (share of each group's channels, or of all channels with
    scope="global"), `target_macs` / `target_params` (fraction kept), `target_latency` (fraction of
    the dense ONNX Runtime latency, searched by measurement) or `plan` (a saved plan); `depth=K` first
    removes the K residual units (transformer layers or blocks) whose removal changes the outputs
    least, alone or before any of those (MACs/params/latency targets count it: latency is timed
    against the model as given). Every other
    keyword is an option of PruneOptions (criterion, scope, recover, round_to, max_layer_ratio, ...)
    or FinetuneOptions (finetune_epochs, finetune_minutes, lr, batch_size, labels, augment, distill,
    select_epoch); or pass
    `options=` / `finetune=`.
    `calib` (a .npz, a folder, feed dicts or a CalibrationDataReader) drives data criteria, recovery
    and, unless `eval_data` (same forms; labels give accuracy) is given, the fidelity report.
    Fine-tuning trains on `train_data` (default: `calib`) and keeps the best epoch on `val_data`; with
    `train_data` given, an epoch whose fidelity on `calib` is worse than the pruned model's is not kept.
    Raises BadInputError for unusable input and ValidationError if the pruned model is invalid.
    """
    if options is None:
        options, from_keywords = options_from_keywords({**keywords, **({"ratio": ratio} if ratio is not None else {})})
        finetune = finetune or from_keywords
    elif ratio is not None or keywords:
        raise BadInputError("pass the options either as options=PruneOptions(...) or as keywords, not both")
    finetune = finetune or FinetuneOptions()
    asked = options.target  # as given: the report shows it, not the width stage's share of it
    given = model_or_path
    depth = remove_depth_first(model_or_path, options, calib) if asked.depth else None
    if depth is not None:  # width pruning then runs on the shallower model, against the same data
        model_or_path, options, calib = depth.model, depth.options, depth.data
    prep = prepare(model_or_path, options, calib, eval_data)
    if depth is not None and options.target.kind == "latency":  # a fraction of the user's model's latency
        prep.latency_reference = depth.dense
    plan = choose_plan(prep)
    if prep.stats is not None and prep.options.recover in ("sequential", "sequential_logit", "none"):
        prep.stats.drop_grams()  # chosen: sequential recovery measures the pruned model itself (1 GB on a 1B model)
    evaluation = prep.evaluation
    dense = prep.model if depth is None else depth.dense
    reference = None  # a large dense model runs before the pruned one exists: never both in ORT and in memory
    lean_graph = not finetune.active and depth is None and lean.wanted(prep, evaluation)  # big graph: later, lean
    if not finetune.active and not lean_graph and one_at_a_time(count_params(prep.graph), evaluation,
                                                                 len(prep.graph.nodes)):
        reference = record_dense(dense, prep.graph.input_shapes, evaluation, options.bench_rounds,
                                 options.threads_capped())
    pruned = apply_and_recover(prep, plan, check=not lean_graph)
    if lean_graph:  # nothing of the analysis beside an ONNX Runtime session (lean_stage.py)
        handover = lean.Handover(prep, plan, pruned)
        del prep, plan, pruned, dense
        return _as_given(PruneResult(*lean.evaluate_lean(handover)), given)
    training = None
    if finetune.active:
        pruned, training = finetune_model(pruned, finetune, train_data if train_data is not None else prep.samples,
                                          teacher=prep.model, val=val_data, seed=options.seed,
                                          threads=options.threads_capped(), progress=options.progress,
                                          guard=prep.samples if train_data is not None else None)
        check_valid(pruned, prep.model)
    # the dense graph counts the cost before, unless recovery added zero biases or depth removed units
    dense_graph = prep.graph if prep.options.recover == "none" and depth is None else None
    report = evaluate(dense, pruned, prep.graph.input_shapes, evaluation, options.bench_rounds,
                      options.threads_capped(), dense_graph=dense_graph,
                      dense_bytes=prep.input_bytes if depth is None else depth.dense_bytes, reference=reference)
    report.update(describe(prep, plan))
    if depth is not None:
        report.update(input=depth.source, depth=depth.report)
        report["options"].update(depth=asked.depth, ratio=asked.ratio, target_macs=asked.macs,
                                 target_params=asked.params)
    if training is not None:
        report["finetune"] = training
    return _as_given(PruneResult(pruned, plan, report), given)


def _as_given(result: PruneResult, given) -> PruneResult:
    """A model given in memory comes back in memory: weights the run kept in work files (a large
    model's, read on demand) are read back into the result's proto."""
    if isinstance(given, onnx.ModelProto):
        materialize(result.model)
    return result


def sparsify(model_or_path, sparsity: float | dict[str, float], *, scope: str = "local", pattern: str = "unstructured",
             sparse_initializers: bool = False, eval_data=None, input_shapes=None) -> PruneResult:
    """Zero the smallest weights of conv and linear layers; `sparsity` may be {"conv": s, "linear": s}.

    The result's plan is None; its report has the achieved sparsity, raw and zip-compressed sizes
    and the fidelity against the dense model.
    """
    model, source = as_model(model_or_path)
    working = fold_constants(model)
    g = ModelGraph(working, input_shapes)
    masks = magnitude_masks(g, sparsity, scope, pattern)
    sparse = apply_masks(working, masks)
    check_valid(sparse, model)
    data = as_dataset(eval_data, model, input_shapes=input_shapes)
    dense_sess = session(model)
    if data is None:
        data = synthetic_dataset(dense_sess, g.input_shapes, samples=8)
    fidelity = compare(dense_sess, load_in_runtime(sparse), data)
    stored = to_sparse_initializers(sparse) if sparse_initializers else sparse
    with inlined(model):  # a large model's weights bound to its data file count too
        dense_zip = zipped_size(model.SerializeToString())
    report = {"schema": REPORT_SCHEMA, "input": source, "options": {"sparsity": sparsity, "scope": scope,
              "pattern": pattern, "sparse_initializers": sparse_initializers},
              "sparsity": sparsity_report(stored, masks), "dense_zip_bytes": dense_zip,
              "fidelity": fidelity.as_dict()}
    return PruneResult(stored, None, report, masks)
