"""Fine-tune an ONNX model in ONNX Runtime: training graph + numpy optimizer + weight masks.

Distillation needs no labels: the dense teacher runs once over the data in ORT and its logits
become the targets. With validation data the best epoch (epoch 0 = before training included) is
what is written back, so fine-tuning never returns a worse model than it was given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx

from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.load.runtime import session
from onnxprune.autodiff.builder import TrainingGraph, _load, build_training_graph
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.optim import AdamW, FlatParams, SGD, make_optimizer
from onnxprune.autodiff.runner import Forward, TrainStep
from onnxprune.autodiff.lr_schedule import cosine, make_schedule, step_decay
from onnxprune.autodiff.weights import read_weights, write_weights

__all__ = ["finetune", "FinetuneResult", "TrainSettings", "SGD", "AdamW", "cosine", "step_decay"]  # optimizers re-exported


@dataclass
class FinetuneResult:
    model: onnx.ModelProto                 # the input model with the trained weights written back
    history: list[dict] = field(default_factory=list)  # one entry per epoch (0 = before training)
    best_epoch: int | None = None          # the epoch written back when validation data was given
    trainable: list[str] = field(default_factory=list)
    frozen: dict[str, str] = field(default_factory=dict)
    steps_per_second: float = 0.0
    build_ms: float = 0.0


@dataclass(frozen=True)
class TrainSettings:
    """How `finetune` trains: loss, optimizer and its schedule, distillation, what is trainable."""

    loss: str | None = None           # "cross_entropy", "mse" or "distill"; default: distill with a teacher
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float | None = None  # default: 0.01 for AdamW, 0 for SGD
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    trainable: tuple[str, ...] | None = None
    temperature: float = 2.0
    distill: str = "kl"
    label_smoothing: float = 0.0
    output: str | None = None
    seed: int = 0
    progress: bool = True
    threads: int = 0


def finetune(model: onnx.ModelProto | str | os.PathLike, data: Dataset, epochs: int = 3, *,
             teacher: onnx.ModelProto | str | os.PathLike | None = None, val_data: Dataset | None = None,
             masks: Mapping[str, np.ndarray] | None = None, settings: TrainSettings | None = None,
             **options) -> FinetuneResult:
    """Train `model`'s weights on `data` for `epochs` and return the model with them written back.

    `options` are TrainSettings fields (lr, batch_size, loss, optimizer, ...), or pass `settings`.
    loss: "cross_entropy" (needs data.labels), "mse" (teacher outputs or float labels as targets) or
    "distill" (needs `teacher`, no labels); default: "distill" with a teacher, else "cross_entropy".
    masks: weight name -> bool array; False entries stay exactly zero throughout.
    """
    try:
        s = settings or TrainSettings(**options)
    except TypeError as exc:
        raise BadInputError(f"finetune: {exc}") from None
    loss, lr, batch_size, optimizer, weight_decay = s.loss, s.lr, s.batch_size, s.optimizer, s.weight_decay
    temperature, distill, label_smoothing, threads = s.temperature, s.distill, s.label_smoothing, s.threads
    model = _load(model)
    if epochs < 0 or batch_size < 1:
        raise BadInputError(f"epochs must be >= 0 and batch_size >= 1, got {epochs} and {batch_size}")
    if len(data) == 0:
        raise BadInputError("the training data holds no samples")
    loss = loss or ("distill" if teacher is not None else "cross_entropy")
    shapes = data.sample_shapes()
    check_ranks(model, shapes)
    tg = build_training_graph(model, s.trainable, loss, output=s.output, input_shapes=shapes, temperature=temperature,
                              distill=distill, label_smoothing=label_smoothing)
    teacher_model = _load(teacher) if teacher is not None else None
    targets = loss_targets(tg, data, teacher_model, batch_size, threads)
    val_targets = loss_targets(tg, val_data, teacher_model, batch_size, threads) if val_data is not None else None

    params = FlatParams(read_weights(model, tg.trainable))
    params.set_masks(_trained_masks(model, tg, masks))
    if weight_decay is None:
        weight_decay = 0.0 if optimizer == "sgd" else 0.01
    optimizer_options = {"weight_decay": weight_decay}
    if optimizer == "sgd":
        optimizer_options["momentum"] = s.momentum
    opt = make_optimizer(optimizer, params, **optimizer_options)
    step = TrainStep(tg, params, threads)
    forward = Forward(model, params, tg.logits, threads) if val_data is not None else None
    batchable = data_batchable(model, data)
    per_epoch = -(-len(data) // batch_size) if batchable else len(data)
    lr_at = make_schedule(s.schedule, lr, max(1, epochs * per_epoch), s.warmup_steps)
    loss_options = {"temperature": temperature, "distill": distill, "label_smoothing": label_smoothing}

    history: list[dict] = []
    best = (None, None, None)  # (score, epoch, snapshot)
    if forward is not None:
        entry = {"epoch": 0, **evaluate_epoch(forward, val_data, val_targets, tg, batch_size, batchable, loss_options)}
        history.append(entry)
        best = (_score(entry), 0, params.snapshot())
    rng = np.random.default_rng(s.seed)
    bar = _progress(s.progress, epochs * per_epoch)
    clock = {"steps": 0, "busy": 0.0}
    for epoch in range(1, epochs + 1):
        batches = shuffled_batches(data, targets, batch_size, batchable, rng)
        entry = {"epoch": epoch, **train_epoch(step, opt, lr_at, batches, clock, bar, epoch)}
        if forward is not None:
            entry.update(evaluate_epoch(forward, val_data, val_targets, tg, batch_size, batchable, loss_options))
            if _score(entry) > best[0]:
                best = (_score(entry), epoch, params.snapshot())
        history.append(entry)
    if bar is not None:
        bar.close()
    if best[2] is not None:
        params.restore(best[2])
    trained = write_weights(model, {n: params.values[n] for n in params.names})
    rate = clock["steps"] / clock["busy"] if clock["busy"] else 0.0
    return FinetuneResult(trained, history, best[1], tg.trainable, tg.frozen, rate, tg.build_ms)


def train_epoch(step: TrainStep, opt, lr_at, batches, clock: dict, bar, epoch: int) -> dict:
    """One pass over the batches; returns the mean loss, the last learning rate and the accuracy."""
    total, seen, correct, labelled, rate = 0.0, 0, 0, 0, 0.0
    for feeds, target, labels in batches:
        started = time.perf_counter()
        value, logits = step(feeds, target)
        rate = lr_at(clock["steps"])
        opt.step(rate)
        clock["busy"] += time.perf_counter() - started
        clock["steps"] += 1
        total += value * len(target)
        seen += len(target)
        if labels is not None:
            correct += int((logits.argmax(-1).reshape(labels.shape) == labels).sum())
            labelled += labels.size
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.4f}")
    entry = {"loss": total / max(seen, 1), "lr": rate}
    if labelled:
        entry["accuracy"] = correct / labelled
    return entry


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


def data_batchable(model: onnx.ModelProto, data: Dataset) -> bool:
    """Samples can be joined along axis 0 when every data input has a dynamic first axis."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or inp.name not in data.inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return False
    return True


def _join(arr: np.ndarray, idx: np.ndarray, batchable: bool) -> np.ndarray:
    """Samples `idx` of a per-sample stack, joined on the model's batch axis."""
    if batchable:
        return np.ascontiguousarray(arr[idx].reshape((-1,) + arr.shape[2:]))
    return np.ascontiguousarray(arr[idx[0]])


def loss_targets(tg: TrainingGraph, data: Dataset, teacher: onnx.ModelProto | None, batch_size: int,
             threads: int) -> np.ndarray:
    """Per-sample targets (sample i is targets[i]): labels, or teacher logits computed once in ORT."""
    if tg.loss_kind != "cross_entropy" and teacher is not None:
        sess = session(teacher, threads)
        names = [o.name for o in sess.get_outputs()]
        name = tg.logits if tg.logits in names else names[0]
        batchable = data_batchable(teacher, data)
        step = batch_size if batchable else 1
        chunks = []
        for start in range(0, len(data), step):
            idx = np.arange(start, min(len(data), start + step))
            out = sess.run([name], {k: _join(v, idx, batchable) for k, v in data.inputs.items()})[0]
            chunks.append(out if batchable else out[None])
        return np.concatenate(chunks).astype(np.float32)
    if data.labels is None:
        need = "labels" if tg.loss_kind == "cross_entropy" else "a teacher model or float targets in 'labels'"
        raise BadInputError(f"the {tg.loss_kind} loss needs {need}")
    dtype = np.int64 if tg.loss_kind == "cross_entropy" else np.float32
    return np.asarray(data.labels).astype(dtype)


def _int_labels(data: Dataset) -> np.ndarray | None:
    labels = data.labels
    return np.asarray(labels) if labels is not None and np.issubdtype(np.asarray(labels).dtype, np.integer) else None


def shuffled_batches(data: Dataset, targets: np.ndarray, batch_size: int, batchable: bool, rng: np.random.Generator):
    order = rng.permutation(len(data))
    step = batch_size if batchable else 1
    labels = _int_labels(data)
    for start in range(0, len(order), step):
        idx = order[start:start + step]
        feeds = {k: _join(v, idx, batchable) for k, v in data.inputs.items()}
        target = np.ascontiguousarray(targets[idx] if batchable else targets[idx[0]])
        yield feeds, target, (labels[idx] if labels is not None else None)


def evaluate_epoch(forward: Forward, data: Dataset, targets: np.ndarray, tg: TrainingGraph, batch_size: int,
              batchable: bool, loss_options: dict) -> dict:
    """The loss against the targets, and the accuracy when integer labels exist."""
    step = batch_size if batchable else 1
    outs = [forward({k: _join(v, np.arange(s, min(len(data), s + step)), batchable) for k, v in data.inputs.items()})
            for s in range(0, len(data), step)]
    logits = np.concatenate(outs) if batchable else np.stack(outs)
    result = {"val_loss": numpy_loss(tg.loss_kind, logits, targets, **loss_options)}
    labels = _int_labels(data)
    if labels is not None:
        result["val_accuracy"] = float((logits.argmax(-1).reshape(labels.shape) == labels).mean())
    return result


def _score(entry: dict) -> float:
    """Higher is better: validation accuracy if known, else minus the validation loss."""
    return entry["val_accuracy"] if "val_accuracy" in entry else -entry.get("val_loss", 0.0)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        return None
    return tqdm(total=total, unit="step", desc="fine-tune", leave=False)
