"""Multi-step pruning without training: toward a MACs (or parameters) target in N steps, re-scoring the
channels on the model pruned so far.

One-shot pruning scores every channel once, on the dense model: two channels that carry the same signal
both look cheap to lose, and both go. Step k here keeps the k-th of N geometrically spaced shares of the
dense cost. Its channels are scored on the model of step k-1 (pruned and re-solved), where a channel
whose partner is gone scores as what it now carries. The selection is made over the DENSE model's
channels, those removed before scored zero, so each step only adds removals and the per-group cap
(`max_layer_ratio`) counts against the dense group. Every step's model is built from the dense one by
the chosen recovery (sequential reconstruction: each consumer re-solved to match the DENSE model's
activations), so the steps' errors do not compound: only the selection differs from one-shot pruning.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Iterator

import numpy as np

from onnxprune.api import PruneResult
from onnxprune.check.evaluate import evaluate
from onnxprune.couple.dependency import Dependency
from onnxprune.errors import BadInputError
from onnxprune.options import PruneOptions, Target, options_from_keywords
from onnxprune.stages import apply_and_recover, channel_scores, choose_plan, describe, prepare

log = logging.getLogger("onnxprune")


def step_targets(target: Target, steps: int) -> list[Target]:
    """The N targets on the way: share t^(k/N) of the dense MACs (or parameters) kept at step k."""
    if target.kind not in ("macs", "params"):
        raise BadInputError("multi-step pruning needs --target-macs or --target-params")
    if steps < 1:
        raise BadInputError(f"--steps must be at least 1, got {steps}")
    return [Target(**{target.kind: float(target.value) ** (k / steps)}) for k in range(1, steps + 1)]


def shared_weight_slots(step: Dependency, dense: Dependency) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(the step model's elements, the dense model's elements) of every weight slot both models hold:
    weights keep their names through pruning and training, so they tie a pruned model's channels to
    the dense ones'."""
    constants = step.graph.constants
    for slot in step.slots:
        if slot.tensor in constants and slot in dense.slot_index:
            yield step.elements(slot), dense.elements(slot)


def to_dense(dense: Dependency, step: Dependency, removed: np.ndarray, step_scores: np.ndarray,
             fallback: np.ndarray) -> tuple[np.ndarray, int]:
    """`step_scores` (channels of the pruned model `step`) as scores of the dense model's channels.

    Parameter slots keep their names through pruning, so a slot of both models maps the pruned model's
    index i to the i-th kept index of the dense slot. Removed channels score 0 (selected again first);
    kept channels no slot maps keep their `fallback` score. Returns the scores and how many fell back."""
    out = np.where(removed, 0.0, np.nan)
    for ours, elements in shared_weight_slots(step, dense):
        kept = elements[~removed[elements]]
        if len(kept) == len(ours):
            out[kept] = step_scores[ours]
    missing = np.isnan(out)
    out[missing] = fallback[missing]
    return out, int(missing.sum())


def prune_stepwise(model_or_path, steps: int, *, calib=None, eval_data=None, options: PruneOptions | None = None,
                   **keywords) -> PruneResult:
    """Prune toward `target_macs` (or `target_params`) in `steps` steps without training; the other
    keywords (or `options`) are prune()'s. The report is prune()'s, with every step under "stepwise"."""
    if options is not None and keywords:
        raise BadInputError("pass the options either as options=PruneOptions(...) or as keywords, not both")
    options, finetune = (options, None) if options is not None else options_from_keywords(keywords)
    if finetune is not None and finetune.active:
        raise BadInputError("multi-step pruning without training takes no fine-tuning options (see --steps)")
    targets = step_targets(options.target, steps)
    if calib is None and steps > 1:
        log.info("multi-step pruning without data re-scores by weights only")
    dense = prepare(model_or_path, options, calib, eval_data)
    removed, trail, plan, model = np.zeros(dense.dep.num_channels, dtype=bool), [], None, None
    scores = first = None
    for k, target in enumerate(targets, start=1):
        step_options, entry = replace(dense.options, target=target), {"step": k, "target": target.value}
        if k > 1:  # the channels scored on the model of the last step
            current = prepare(model, replace(step_options, input_shapes=dense.graph.input_shapes), calib)
            scores, entry["unmapped_channels"] = to_dense(dense.dep, current.dep, removed,
                                                          channel_scores(current, current.options), scores)
        else:
            scores = first = channel_scores(dense, step_options)
        plan = choose_plan(dense, step_options, scores)
        if k > 1:  # what re-scoring changed: channels removed here that one-shot scores would have kept
            entry["changed_by_rescoring"] = int((plan.removed & ~choose_plan(dense, step_options, first).removed).sum())
        if k == 1 and dense.stats is not None:
            dense.stats.drop_grams()  # scored: the steps after it score their own model
        plan.removed |= removed  # a step never puts back a channel an earlier one removed
        removed = plan.removed.copy()
        model = apply_and_recover(dense, plan)
        trail.append({**entry, "removed_channels": int(removed.sum())})
    dense_graph = dense.graph if dense.options.recover == "none" else None
    report = evaluate(dense.model, model, dense.graph.input_shapes, dense.evaluation, options.bench_rounds,
                      options.threads_capped(), dense_graph=dense_graph, dense_bytes=dense.input_bytes)
    report.update(describe(dense, plan))
    report["stepwise"] = {"steps": steps, "trail": trail}
    return PruneResult(model, plan, report)


__all__ = ["prune_stepwise", "shared_weight_slots", "step_targets", "to_dense"]
