"""Iterative pruning: toward the target in N steps, distilling from the dense model between them.

Step k prunes the current model to the k-th of N geometrically spaced targets (a share of the dense
model's MACs or parameters, or of its channels for --ratio), re-solving consumers as one-shot
pruning does, then fine-tunes on its share of the epoch (or minute) budget with the dense model as
the teacher. The per-layer cap counts against the dense model's groups (`dense_floors`): counted
against each step's model, three steps at a 0.5 cap may leave an eighth of a layer. The report
compares the final model with the dense one, as `prune` does, and lists every step under "iterative".
"""

from __future__ import annotations

import os
from dataclasses import replace

import onnx

from onnxprune.api import PruneResult
from onnxprune.check.evaluate import evaluate
from onnxprune.check.validate import check_valid
from onnxprune.couple.dependency import Dependency
from onnxprune.errors import BadInputError
from onnxprune.graph.cost import count_macs, count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.options import FinetuneOptions, PruneOptions, Target
from onnxprune.finetune_stage import finetune_model
from onnxprune.select.refine import least_widths
from onnxprune.stages import apply_and_recover, choose_plan, describe, prepare
from onnxprune.stepwise import shared_weight_slots


def step_checkpoint(checkpoint: str | os.PathLike, step: int) -> str:
    """The checkpoint of step `step` (a resumed run skips the steps whose training finished)."""
    return f"{checkpoint}.step{step}"


def step_budgets(tune: FinetuneOptions, steps: int) -> list[FinetuneOptions]:
    """The epoch (or minute) budget split over the steps, the remainder going to the last ones."""
    epochs = [tune.epochs // steps + (1 if k >= steps - tune.epochs % steps else 0) for k in range(steps)]
    minutes = tune.minutes / steps if tune.minutes else None
    return [replace(tune, epochs=e, minutes=minutes,
                    checkpoint=step_checkpoint(tune.checkpoint, k) if tune.checkpoint else None)
            for k, e in enumerate(epochs)]


def dense_floors(step: Dependency, dense: Dependency, least: dict[int, int]) -> dict[int, int]:
    """Per group of a step's (pruned) model, the least width `least` gives the dense group it came
    from, matched through the weights, which keep their names through pruning and training."""
    floors: dict[int, int] = {}
    for ours, theirs in shared_weight_slots(step, dense):
        if len(ours) and len(theirs):
            gid = int(step.channel_group[ours[0]])
            floors[gid] = max(floors.get(gid, 0), least[int(dense.channel_group[theirs[0]])])
    return floors


def _cost(model: onnx.ModelProto, shapes, kind: str) -> int:
    graph = ModelGraph(model, shapes)
    return count_macs(graph) if kind == "macs" else count_params(graph)


def _step_target(target: Target, k: int, steps: int, current: float) -> Target:
    """The target of step k (1-based) relative to the current model, `current` being its share of the dense."""
    if target.kind == "ratio":  # keep (1 - r)^(k/N) of the channels overall
        keep = (1.0 - target.ratio) ** (1.0 / steps)
        return Target(ratio=1.0 - keep)
    goal = target.value ** (k / steps)
    return Target(**{target.kind: min(0.999, goal / current)})


def prune_iteratively(model_or_path, steps: int, *, calib=None, eval_data=None, train_data=None, val_data=None,
                      options: PruneOptions, finetune: FinetuneOptions) -> PruneResult:
    """Prune toward `options.target` in `steps` steps with distillation from the dense model between them."""
    if options.target.kind not in ("macs", "params", "ratio"):
        raise BadInputError("--steps needs --target-macs, --target-params or --ratio (a plan or a latency target "
                            "is reached in one step)")
    if not finetune.active:
        raise BadInputError("--steps distils between the steps: give --finetune EPOCHS or --finetune-minutes")
    dense_prep = prepare(model_or_path, options, calib, eval_data)
    dense, shapes, kind = dense_prep.model, dense_prep.graph.input_shapes, options.target.kind
    dense_cost = _cost(dense_prep.working, shapes, kind) if kind != "ratio" else 1
    current, model, prep, plan, trail = 1.0, dense, dense_prep, None, []
    train = train_data if train_data is not None else dense_prep.samples
    dense_least = least_widths(dense_prep.dep, dense_prep.options.max_layer_ratio, dense_prep.options.min_channels)
    # the hidden width is decided once, on the dense model against the final target: a later step asked
    # again weighs its own target against caps counted from its own widths, not the dense floors it keeps
    hidden = "on" if dense_prep.dep.graph.hidden else "off"
    for k, tune in enumerate(step_budgets(finetune, steps), start=1):
        step_options = replace(options, target=_step_target(options.target, k, steps, current),
                               round_to=dense_prep.options.round_to,  # resolved by prepare (None: the default)
                               hidden=hidden if k > 1 else options.hidden)
        prep = dense_prep if k == 1 else prepare(model, replace(step_options, criterion=dense_prep.options.criterion,
                                                                scope=dense_prep.options.scope,
                                                                recover=dense_prep.options.recover), calib)
        if k > 1:
            prep.floors = dense_floors(prep.dep, dense_prep.dep, dense_least)
        plan = choose_plan(prep, step_options)
        model = apply_and_recover(prep, plan)
        fragment = None
        if tune.active:
            model, fragment = finetune_model(model, tune, train, teacher=dense, val=val_data, seed=options.seed,
                                             threads=options.threads_capped(), progress=options.progress,
                                             guard=None if train_data is None else dense_prep.samples)
            check_valid(model, dense)
        if kind != "ratio":
            current = _cost(model, shapes, kind) / dense_cost
        trail.append({"step": k, "target": step_options.target.value, "kept": round(current, 4),
                      "finetune": fragment})
    report = evaluate(dense, model, shapes, dense_prep.evaluation, options.bench_rounds, options.threads_capped(),
                      dense_bytes=dense_prep.input_bytes)
    report.update(describe(dense_prep, plan))
    report["iterative"] = {"steps": steps, "trail": trail}
    return PruneResult(model, plan, report)
