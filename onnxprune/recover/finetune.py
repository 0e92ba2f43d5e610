"""Fine-tune an ONNX model in ONNX Runtime: training graph + numpy optimizer + weight masks.

Distillation needs no labels: the dense teacher's outputs are the targets. The epochs are ranked
on held-out data (the validation data, or a share of the training data set aside) by fidelity to
the targets, or by accuracy when labels exist; epoch 0 (no training) is a candidate, so
fine-tuning never returns a model worse on that measure than the one it was given. A loss that
becomes NaN stops training at the last good epoch. With a checkpoint path every finished epoch
is saved atomically, and `resume` continues a killed run from its last one (trainloop.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

import numpy as np
import onnx

from onnxprune.load.augment import parse_augment
from onnxprune.recover.epoch_measures import EPOCH_SELECTIONS
from onnxprune.load.data import Dataset
from onnxprune.load.train_data import split_holdout
from onnxprune.errors import BadInputError
from onnxprune.autodiff.builder import TrainingGraph, _load, build_training_graph
from onnxprune.autodiff.optim import AdamW, FlatParams, SGD, make_optimizer
from onnxprune.autodiff.runner import Forward, TrainStep
from onnxprune.autodiff.lr_schedule import cosine, step_decay
from onnxprune.autodiff.weights import read_weights, write_weights
from onnxprune.apply.qdq_lower import lower
from onnxprune.load.qdq_lift import lift
from onnxprune.recover.as_float32 import float32_twin
from onnxprune.score.branch_outputs import decided_view
from onnxprune.recover.detect_distill import detect_spec
from onnxprune.recover.distill_mode import choose, on_logits
from onnxprune.recover.distill_weights import unbalanced
from onnxprune.recover.batch_view import batch_view
from onnxprune.recover.outputs import OTHERS_WEIGHT, besides, distilled_outputs, per_sample, primary_output
from onnxprune.recover.microbatch import Chunked, MicroBatched, micro_batch
from onnxprune.recover.step_memory import STEP_BUDGET_MB, step_bytes
from onnxprune.recover.features import feature_points, sliced_points
from onnxprune.recover.targets import Targets, data_batchable, feeds_of, join
from onnxprune.recover.trainloop import MAX_EPOCHS, Loop

log = logging.getLogger("onnxprune")
GUARD_SAMPLES = 64  # guard inputs judged per epoch at most (trainloop.eligible)
SLICE_SAMPLES = 8  # samples the kept channels of pruned layers are matched on (features.sliced_points)
__all__ = ["finetune", "data_batchable", "MAX_EPOCHS", "FinetuneResult", "TrainSettings", "SGD", "AdamW", "cosine", "step_decay"]  # optimizers re-exported

@dataclass
class FinetuneResult:
    model: onnx.ModelProto                 # the input model with the trained weights written back
    history: list[dict] = field(default_factory=list)  # one entry per epoch (0 = before training)
    best_epoch: int | None = None          # the epoch written back (0: training did not help)
    trainable: list[str] = field(default_factory=list)
    frozen: dict[str, str] = field(default_factory=dict)
    steps_per_second: float = 0.0
    build_ms: float = 0.0
    stopped: str | None = None             # why training ended early: "nan", "time"
    resumed_from: int | None = None        # the checkpoint's epoch when a run was resumed
    lr: float | None = None                # the learning rate trained at (given or chosen)
    distill: str | None = None             # the distillation loss used ("auto" resolved), None without a teacher
    features: list[str] = field(default_factory=list)  # tensors matched by feature distillation
    others: list[str] = field(default_factory=list)    # other outputs distilled beside the primary (outputs.py)


@dataclass(frozen=True)
class TrainSettings:
    """How `finetune` trains: loss, optimizer and its schedule, distillation, what is trainable,
    the budget, held-out selection, augmentation and checkpoints."""

    loss: str | None = None           # "cross_entropy", "mse" or "distill"; default: distill with a teacher
    lr: float | None = None           # None: chosen by a short range test (recover/lrfind.py)
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.01 for AdamW, 0 for SGD
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    lr_test_warmup: bool = False      # the range test ramps each rate up over its steps (recover/lrfind.py)
    trainable: tuple[str, ...] | None = None
    temperature: float = 2.0
    distill: str = "auto"             # "kl", "mse", "balanced" (recover/distill_weights.py), "detect"
    #                                   (recover/detect_distill.py), "binary" (a Sigmoid's scores) or "auto"
    #                                   (recover/distill_mode.py: chosen by what the output is)
    label_smoothing: float = 0.0
    output: str | None = None
    seed: int = 0
    progress: bool = True
    threads: int = 0
    minutes: float | None = None      # wall-time budget for training (with or without an epoch count)
    holdout: float = 0.1              # share of the training data held out when no val_data is given
    augment: tuple[str, ...] = ()     # "flip", "crop", "scale" (load/augment.py)
    checkpoint: str | None = None     # .npz rewritten after every epoch (recover/checkpoint.py)
    resume: bool = False              # continue from `checkpoint` if it exists
    memory_mb: float = STEP_BUDGET_MB  # all one training step holds (recover/step_memory.py); larger batches run in parts
    keep: str = "best"                # "best": the best held-out epoch (0 included); "last": the last epoch
    select: str = "fidelity"          # by held-out loss, "agreement": top-1 agreement with the teacher, "parts": a
    #                                   packed head's worst part cosine, "confident": its confident anchors' F1
    features: float = 0.0             # weight of intermediate-feature distillation (recover/features.py); 0: off
    softmax_logits: bool = True       # distill the logits a final Softmax reads, not its probabilities (logits.py)
    score_weight: float = 1.0         # distill="detect": weight of the score rows' term (autodiff/detect_loss.py)
    score_focus: float = 0.0          # distill="detect": weight of the score rows' confident-anchor term; 0: off


def finetune(model: onnx.ModelProto | str | os.PathLike, data: Dataset, epochs: int | None = 3, *,
             teacher: onnx.ModelProto | str | os.PathLike | None = None, val_data: Dataset | None = None,
             masks: Mapping[str, np.ndarray] | None = None, settings: TrainSettings | None = None,
             guard_data: Dataset | None = None, **options) -> FinetuneResult:
    """Train `model`'s weights on `data` for `epochs` (None: until `minutes` run out) and return the
    model with the best epoch's weights written back.

    `options` are TrainSettings fields (lr, batch_size, loss, minutes, augment, ...), or pass `settings`.
    loss: "cross_entropy" (needs data.labels), "mse" (teacher outputs or float labels as targets) or
    "distill" (needs `teacher`, no labels); default: "distill" with a teacher, else "cross_entropy".
    masks: weight name -> bool array; False entries stay exactly zero throughout.
    guard_data: the user's own inputs when `data` are other ones (prune passes its calibration data
    with --train-data); when distilling, a trained epoch is kept only if its fidelity on (up to
    GUARD_SAMPLES of) them is no worse than epoch 0's (trainloop.eligible).
    Raises BadInputError for unusable data or settings, ValidationError if the loss became NaN
    before any epoch finished.
    """
    try:
        s = settings or TrainSettings(**options)
    except TypeError as exc:
        raise BadInputError(f"finetune: {exc}") from None
    s = _checked(s, epochs)
    model = _load(model)
    if len(data) == 0:
        raise BadInputError("the training data holds no samples")
    loss = s.loss or ("distill" if teacher is not None else "cross_entropy")
    if val_data is None:
        data, val_data = split_holdout(data, s.holdout if s.keep == "best" else 0.0, s.seed)
    shapes = data.sample_shapes()
    check_ranks(model, shapes)
    teacher_model = _load(teacher) if teacher is not None else None
    # a QDQ model's integer weights (int8 weights, int32 biases behind a DequantizeLinear) have no gradient:
    # they train as the floats they stand for and are re-quantized with their own scheme after (the
    # lift/lower pair pruning uses); without this only its float leftovers trained (PP-OCR cls QDQ: 35 BN
    # offsets of 107 weights), and a model quantized throughout (orinet QDQ) had nothing to train
    model, lifted = lift(model)
    exported = model  # the trained weights are written back into the model as given (float16 ones cast back)
    # Ifs the samples' shapes decide: trained through the branch taken (written back into it: write_weights)
    model = decided_view(model, shapes) or model
    model = float32_twin(model) or model  # float16 weights train in float32 (recover/as_float32.py)
    teacher_model = None if teacher_model is None else float32_twin(teacher_model, "the teacher") or teacher_model
    batchable = data_batchable(model, data)
    if s.batch_size > 1 and len(data) > 1:  # a batch fixed at 1 or not on the outputs' axis 0: a batch view
        model, teacher_model, batchable = _batch_views(model, teacher_model, data, s.threads, batchable)
    output, others = s.output or primary_output(model), []
    if loss == "distill" and teacher_model is not None:  # every float output, one of them primary (outputs.py)
        output, others = distilled_outputs(model, teacher_model, s.output, data, batchable, s.threads)
    squash = None  # "softmax" / "sigmoid": the logits a final Softmax / Sigmoid reads are distilled (distill_mode.py)
    if loss == "distill" and teacher_model is not None and s.softmax_logits:
        viewed = on_logits(model, teacher_model, output, s.distill)
        # a Sigmoid's logits found through reshapes may not hold one row per sample: then its scores are distilled
        if viewed[3] != "sigmoid" or per_sample(viewed[1], [viewed[2]], data, batchable, s.threads):
            model, teacher_model, output, squash = viewed
        others = besides(others, output)
    elif loss == "cross_entropy" and s.softmax_logits:  # labels: the cross-entropy reads logits, not probabilities
        model, _, output, squash = on_logits(model, model, output, "kl")
    distill, balance = choose(s.distill, teacher_model if loss == "distill" else None, output, data, batchable,
                              squash, s.threads)
    if distill == "detect" and loss == "distill" and teacher_model is not None:  # recover/detect_distill.py
        balance = detect_spec(model, teacher_model, output, data, batchable, s.threads, s.score_weight, s.score_focus)
    s = replace(s, distill=distill)
    points, slices = _feature_points(model, teacher_model, data, s, batchable and loss == "distill")
    tg = build_training_graph(model, s.trainable, loss, output=output, input_shapes=shapes,
                              temperature=s.temperature, distill=s.distill, label_smoothing=s.label_smoothing,
                              features=(points, s.features), balance=balance, others=(others, OTHERS_WEIGHT))
    matched = {o: tg.feature_targets[o] for o in tg.others}  # the other outputs' teacher values, fed per batch
    targets = Targets(tg, data, teacher_model, batchable, s.threads, per_batch=bool(s.augment),
                      features={**{p: tg.feature_targets[p] for p in points}, **matched}, slices=slices,
                      keep_features=not points)
    val_targets = Targets(tg, val_data, teacher_model, batchable, s.threads, features=matched, keep_features=True)
    micro = _micro(model, shapes, teacher_model, tg, targets, s) if batchable else s.batch_size
    targets.chunk = val_targets.chunk = micro  # the teacher never runs on more samples than a training step
    guard = _guard(guard_data, model, tg, teacher_model, batchable, s.threads, micro, matched) \
        if loss == "distill" else None
    # a detector's packed rows (channels off the last axis) have no top-1 class: its argmax over anchors
    # is noise there (NudeNet: 0.16-0.19), so the guard judges them by the loss alone
    agreement = guard is None or not unbalanced(guard[1].first(8))
    targets.lazy = True  # per-batch targets are computed per micro-batch, inside the step

    params = FlatParams(read_weights(model, tg.trainable))
    params.set_masks(_trained_masks(model, tg, masks))
    weight_decay = s.weight_decay if s.weight_decay is not None else (0.0 if s.optimizer == "sgd" else 0.01)
    optimizer_options = {"weight_decay": weight_decay, **({"momentum": s.momentum} if s.optimizer == "sgd" else {})}
    opt = make_optimizer(s.optimizer, params, **optimizer_options)
    loop = Loop(s, tg, params, opt, batchable)
    loop.guard, loop.guard_agreement = guard, agreement
    step = TrainStep(tg, params, s.threads)
    loop.step = MicroBatched(step, params, micro)
    forward = Forward(model, params, [tg.logits, *tg.others] if tg.others else tg.logits, s.threads)
    loop.forward = Chunked(forward, micro) if batchable else forward
    run_settings = {k: v for k, v in asdict(s).items() if k not in ("progress", "threads", "minutes", "resume")}
    run_settings["distilled"] = [tg.logits, *tg.others]  # a checkpoint of another loss does not resume
    loop.start(params.snapshot(), {**run_settings, "loss": loss, "samples": len(data), "epochs": epochs})
    loop.run(data, targets, val_data, val_targets, epochs)
    params.restore(loop.best[2])
    trained = write_weights(exported, {n: params.values[n] for n in params.names})
    if lifted:  # all channels kept: the lifted scheme is the given model's own
        trained = lower(trained, lifted, lambda tensor, axis: None)
    rate = loop.clock["steps"] / loop.clock["busy"] if loop.clock["busy"] else 0.0
    return FinetuneResult(trained, loop.history, loop.best[1], tg.trainable, tg.frozen, rate, tg.build_ms,
                          loop.stopped, loop.resumed_from, loop.lr, s.distill if loss == "distill" else None,
                          points, list(tg.others))


def _guard(data: Dataset | None, model: onnx.ModelProto, tg: TrainingGraph, teacher: onnx.ModelProto | None,
           batchable: bool, threads: int, chunk: int, matched: dict[str, str]) -> tuple[Dataset, Targets] | None:
    """The guard inputs and the teacher's targets on them (None without either)."""
    if data is None or teacher is None or len(data) == 0:
        return None
    data = data.take(min(GUARD_SAMPLES, len(data)))
    check_ranks(model, data.sample_shapes())
    targets = Targets(tg, data, teacher, batchable, threads, features=matched, keep_features=True)
    targets.chunk = chunk
    return data, targets


def _checked(s: TrainSettings, epochs: int | None) -> TrainSettings:
    if epochs is None and not s.minutes:
        raise BadInputError("give a budget: a number of epochs, minutes, or both")
    if (epochs is not None and epochs < 0) or s.batch_size < 1:
        raise BadInputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {s.batch_size}")
    if s.minutes is not None and not (s.minutes > 0 and np.isfinite(s.minutes)):
        raise BadInputError(f"--finetune-minutes must be a positive number, got {s.minutes}")
    if not 0.0 <= s.holdout < 1.0:
        raise BadInputError(f"holdout must lie in [0, 1), got {s.holdout}")
    if s.select not in EPOCH_SELECTIONS:
        raise BadInputError(f"select must be one of {', '.join(EPOCH_SELECTIONS)}, got {s.select!r}")
    if s.keep not in ("best", "last"):
        raise BadInputError(f"keep must be 'best' or 'last', got {s.keep!r}")
    if s.resume and not s.checkpoint:
        raise BadInputError("resume needs a checkpoint path")
    return TrainSettings(**{**asdict(s), "augment": parse_augment(s.augment)})


def _batch_views(model: onnx.ModelProto, teacher: onnx.ModelProto | None, data: Dataset, threads: int,
                 batchable: bool) -> tuple[onnx.ModelProto, onnx.ModelProto | None, bool]:
    """Student and teacher with a symbolic batch axis and batch-first outputs (recover/batch_view.py),
    when both allow it; else both as given."""
    samples = [feeds_of(data, np.array([i]), False) for i in range(2)]
    student = batch_view(model, samples, threads)
    coach = batch_view(teacher, samples, threads) if teacher is not None and student is not None else None
    if student is None or (teacher is not None and coach is None):
        if not batchable:
            log.info("the batch axis is fixed at 1: training one sample per step")
        return model, teacher, batchable
    return student, coach, True


def _feature_points(model: onnx.ModelProto, teacher: onnx.ModelProto | None, data: Dataset, s: TrainSettings,
                    usable: bool) -> tuple[list[str], dict[str, tuple[int, np.ndarray]]]:
    """Tensors matched to the teacher's when feature distillation is on (batched distillation only): the
    pruned groups' consumers' outputs, and the pruned layers' own outputs at their kept channels (slices)."""
    if not s.features:
        return [], {}
    if teacher is None or not usable:
        log.warning("feature distillation skipped: it needs a teacher and samples that batch (a dynamic batch axis)")
        return [], {}
    whole = feature_points(model, teacher, feeds_of(data, np.arange(min(2, len(data))), True), s.threads)
    slices = sliced_points(model, teacher, feeds_of(data, np.arange(min(SLICE_SAMPLES, len(data))), True), s.threads)
    points = whole + [p for p in slices if p not in whole]
    if not points:
        log.warning("feature distillation: no pruned layer's output could be matched; output distillation only")
    log.info("feature distillation at %d tensors (%d at kept channels): %s", len(points), len(slices),
             ", ".join(points[:8]))
    return points, slices


def _micro(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]], teacher: onnx.ModelProto | None,
           tg: TrainingGraph, targets: Targets, s: TrainSettings) -> int:
    """Samples per micro-batch: all that a step holds per sample (recover/step_memory.py) within memory_mb."""
    need = step_bytes(model, shapes, teacher, tg.logits, list(tg.feature_targets), targets.per_batch)
    micro = micro_batch(s.batch_size, need.per_sample, s.memory_mb)
    log.info("training step: %d of %d samples at a time (MB per sample: %s)", micro, s.batch_size,
             ", ".join(f"{k} {v:g}" for k, v in need.as_mb().items() if v))
    return micro


def _trained_masks(model: onnx.ModelProto, tg: TrainingGraph, masks: Mapping[str, np.ndarray] | None) -> dict:
    """Masks of trained weights; masks of weights that are not trained hold anyway (they do not change)."""
    if not masks:
        return {}
    others = [name for name in masks if name not in tg.trainable]
    read_weights(model, others)  # a name that is not a weight of the model at all is an error
    return {name: mask for name, mask in masks.items() if name in tg.trainable}


def check_ranks(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Each sample must be shaped like the model input (batch axis included, as Dataset stores it)."""
    for inp in model.graph.input:
        if inp.name in shapes:
            rank = len(inp.type.tensor_type.shape.dim)
            if len(shapes[inp.name]) != rank:
                raise BadInputError(f"samples of '{inp.name}' have shape {shapes[inp.name]}, the input has rank "
                                    f"{rank}; stack samples as (N, *input_shape) (e.g. N x 1 x C x H x W)")


_join = join  # older name, kept for callers
