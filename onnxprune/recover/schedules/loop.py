"""A training run whose masks may change between epochs (the schedules' prune-and-regrow steps).

`autodiff.finetune` trains with fixed masks and returns the best epoch; the schedules need the
optimizer, the live weights and the masks between epochs, so they drive the same pieces
(training graph, FlatParams, numpy optimizer, IOBinding step) through this class. The mask is
applied after every optimizer step by `Optimizer.step`; a regrown connection starts at zero with
fresh optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx

from onnxprune.autodiff import build_training_graph, read_weights, write_weights
from onnxprune.autodiff.optim import FlatParams, make_optimizer
from onnxprune.autodiff.runner import Forward, TrainStep
from onnxprune.autodiff.lr_schedule import make_schedule
from onnxprune.recover.finetune import check_ranks, data_batchable
from onnxprune.recover.logits import logits_views
from onnxprune.recover.outputs import primary_output
from onnxprune.recover.trainloop import evaluate_epoch, loss_targets, shuffled_batches, train_epoch
from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError

# optimizer class name -> its per-weight state arrays, cleared where a connection is regrown
OPTIMIZER_STATE = {"AdamW": ("_m", "_v"), "SGD": ("_velocity",)}
# loss options, as autodiff.finetune's defaults (distillation only reads them)
LOSS_OPTIONS = {"temperature": 2.0, "distill": "kl", "label_smoothing": 0.0}
# AdamW learning rates when none is given, from the model's weights or re-initialised (docs/schedules.md)
DEFAULT_LR = {"given": 3e-3, "reinit": 1e-2}


@dataclass
class TrainConfig:
    lr: float | None = None               # None: the schedules' default (3e-3 from given weights, 1e-2 from scratch)
    batch_size: int = 64
    optimizer: str = "adamw"
    weight_decay: float | None = None     # default: 0.01 for AdamW, 0 for SGD
    momentum: float = 0.9
    lr_schedule: str = "cosine"            # per training phase: cosine, step or constant
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if (self.lr is not None and self.lr <= 0) or self.batch_size < 1:
            raise BadInputError(f"--lr must be > 0 and --batch-size >= 1, got {self.lr} and {self.batch_size}")


class TrainingRun:
    """One training phase: `epoch()` trains once over the data; masks can be replaced in between."""

    def __init__(self, model: onnx.ModelProto, data: Dataset, epochs: int, config: TrainConfig, *,
                 loss: str = "cross_entropy", teacher: onnx.ModelProto | None = None,
                 masks: Mapping[str, np.ndarray] | None = None, val_data: Dataset | None = None, bar=None,
                 first_epoch: int = 1):
        if len(data) == 0:
            raise BadInputError("the training data holds no samples")
        check_ranks(model, data.sample_shapes())
        self.model, self.data, self.config, self.bar, self.val_data = model, data, config, bar, val_data
        # the loss reads the logits a final Softmax reads (cross-entropy and KL alike), on the class-score output
        primary = primary_output(model)
        view = logits_views(model, teacher if teacher is not None else model, primary)
        graph, coach, output = view if view is not None else (model, teacher, primary)
        teacher = coach if teacher is not None else None
        self.tg = build_training_graph(graph, None, loss, output=output, input_shapes=data.sample_shapes(),
                                       **LOSS_OPTIONS)
        self.targets = loss_targets(self.tg, data, teacher, config.batch_size, config.threads)
        self.val_targets = loss_targets(self.tg, val_data, teacher, config.batch_size, config.threads) \
            if val_data is not None else None
        self.params = FlatParams(read_weights(model, self.tg.trainable))
        self.masks: dict[str, np.ndarray] = {}
        self.set_masks(masks or {})
        decay = config.weight_decay if config.weight_decay is not None else (0.0 if config.optimizer == "sgd" else 0.01)
        options = {"weight_decay": decay, **({"momentum": config.momentum} if config.optimizer == "sgd" else {})}
        self.opt = make_optimizer(config.optimizer, self.params, **options)
        self.step = TrainStep(self.tg, self.params, config.threads)
        self.forward = Forward(graph, self.params, self.tg.logits, config.threads) if val_data is not None else None
        self.batchable = data_batchable(model, data)
        per_epoch = -(-len(data) // config.batch_size) if self.batchable else len(data)
        lr = config.lr if config.lr is not None else DEFAULT_LR["given"]
        self.lr_at = make_schedule(config.lr_schedule, lr, max(1, epochs * per_epoch))
        self.rng = np.random.default_rng([config.seed, first_epoch])  # data order; phases differ
        self.clock = {"steps": 0, "busy": 0.0}
        self.epochs_done = first_epoch - 1   # numbering continues across the phases of a schedule
        self._offsets = dict(zip(self.params.names, np.cumsum([0] + [self.params.values[n].size
                                                                    for n in self.params.names])[:-1].tolist()))

    @property
    def trainable(self) -> list[str]:
        return list(self.tg.trainable)

    def weight(self, name: str) -> np.ndarray:
        """The live weight (a view: writing to it changes what the next step trains)."""
        return self.params.values[name]

    def set_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        """Replace the masks; weights outside them become zero at once."""
        frozen = sorted(set(masks) - set(self.tg.trainable))
        if frozen:
            raise BadInputError(f"cannot train masks of weights the gradient does not reach: {frozen} "
                                f"(frozen: {self.tg.frozen})")
        self.masks = {name: np.asarray(mask, dtype=bool).copy() for name, mask in masks.items()}
        self.params.set_masks(self.masks)

    def regrow(self, name: str, flat_index: np.ndarray) -> None:
        """New connections of `name` start at zero with cleared optimizer state (momentum, Adam moments)."""
        self.params.values[name].reshape(-1)[flat_index] = 0.0
        where = self._offsets[name] + np.asarray(flat_index, dtype=np.int64)
        for attr in OPTIMIZER_STATE.get(type(self.opt).__name__, ()):
            getattr(self.opt, attr)[where] = 0.0

    def epoch(self) -> dict:
        """Train one epoch; returns its loss, accuracy (labels) and validation figures (if val data)."""
        self.epochs_done += 1
        batches = shuffled_batches(self.data, self.targets, self.config.batch_size, self.batchable, self.rng)
        entry = train_epoch(self.step, self.opt, self.lr_at, batches, self.clock, self.bar, self.epochs_done)
        if self.forward is not None:
            entry.update(evaluate_epoch(self.forward, self.val_data, self.val_targets, self.tg, self.config.batch_size,
                                   self.batchable, LOSS_OPTIONS))
        return entry

    def result(self) -> onnx.ModelProto:
        """The model with the trained weights written back (masked entries exactly zero)."""
        self.params.apply_mask()
        return write_weights(self.model, {n: self.params.values[n] for n in self.params.names})
