"""The pruning schedules: when in training the connections are chosen, and how they change.

    result = train_schedule(model, data, "set", ScheduleOptions(epochs=20, sparsity={"conv": 0.5, "linear": 0.8}))

Every schedule gets the same number of epochs and ends with each conv/linear layer at exactly its
target sparsity (SET: its Erdős–Rényi share, the kind as a whole at the target), zeros in the model.

- dense: no pruning, the baseline at the same budget.
- pre: prune the weakest |w| at initialisation (per layer), train with the masks kept.
- in: train dense; after each epoch (but the last) cut the weakest active weights and regrow a share
  zeta of them at random positions (zero-initialised); the sparsity ramps up along a cubic
  (Zhu & Gupta 2017) over the first `ramp` share of the epochs, then stays fixed: cut = regrown.
- post: train dense for the first epochs, prune the weakest |w| per layer, fine-tune with masks.
- set: Erdős–Rényi(-Kernel) random sparse start (Mocanu et al. 2018; Evci et al. 2020 for convs);
  after each epoch (but the last) cut the share zeta of each layer's active weights with the
  smallest |w| and regrow as many at random positions.
- post-structured: train dense, remove whole channels with `onnxprune.prune` down to the parameter
  count the unstructured schedules keep, fine-tune the smaller dense model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import onnx

from onnxprune.autodiff import read_weights
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.plan import Plan
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.fold import fold_constants
from onnxprune.score.criteria import score
from onnxprune.select.plan import CostModel, search_ratio, select_uniform
from onnxprune.load.data import Dataset
from onnxprune.errors import BadInputError
from onnxprune.apply.sparsity import apply_masks
from onnxprune.recover.schedules.layers import Layer, find_layers, reinitialise
from onnxprune.recover.schedules.loop import DEFAULT_LR, TrainConfig, TrainingRun
from onnxprune.recover.schedules.masks import check_sparsity, er_densities, keep_count, magnitude_mask, prune_and_regrow, random_mask

DEFAULT_SPARSITY = {"conv": 0.5, "linear": 0.8}   # the seed study's shares
# share of zeta used after epoch e of E (cuts happen after epochs 1 .. E-1)
ZETA_DECAYS: dict[str, Callable[[int, int], float]] = {
    "constant": lambda e, epochs: 1.0,
    "cosine": lambda e, epochs: 0.5 * (1.0 + math.cos(math.pi * (e - 1) / max(1, epochs - 1))),
}


@dataclass
class ScheduleOptions:
    epochs: int = 10
    sparsity: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPARSITY))
    zeta: float = 0.3              # in, set: share of a layer's active weights cut and regrown per epoch
    zeta_decay: str = "constant"   # in, set: "constant" (Mocanu et al.) or "cosine" towards 0 at the last cut (RigL)
    ramp: float = 0.5              # in: share of the epochs over which the sparsity ramps up
    finetune_share: float = 0.5    # post, post-structured: share of the epochs after the prune
    reinit: str | None = None      # None: start from the model's weights; "kaiming", "glorot", ...: from scratch
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        if self.epochs < 1:
            raise BadInputError(f"--epochs must be at least 1, got {self.epochs}")
        if self.train.lr is None:
            self.train = replace(self.train, lr=DEFAULT_LR["reinit" if self.reinit else "given"])
        if self.zeta_decay not in ZETA_DECAYS:
            raise BadInputError(f"zeta_decay must be one of {', '.join(ZETA_DECAYS)}, got '{self.zeta_decay}'")
        for name in ("zeta", "ramp", "finetune_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise BadInputError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class ScheduleResult:
    schedule: str
    model: onnx.ModelProto
    masks: dict[str, np.ndarray]           # final keep-masks (empty: dense or structured)
    history: list[dict]                    # one entry per epoch, with the topology changes after it
    layers: list[dict]                     # per layer: name, kind, shape, size, kept (mask), nonzero, sparsity
    info: dict = field(default_factory=dict)


class _Job:
    """What a schedule function works with: the model, its layers, the data, the options, the history."""

    def __init__(self, name: str, model: onnx.ModelProto, data: Dataset, options: ScheduleOptions,
                 val_data: Dataset | None, teacher: onnx.ModelProto | None, bar):
        self.name, self.data, self.options, self.val_data, self.bar = name, data, options, val_data, bar
        self.model = fold_constants(model)  # weights computed from constants become plain initializers
        self.layers = find_layers(self.model)
        if options.reinit:
            self.model = reinitialise(self.model, self.layers, options.reinit, options.train.seed)
        self.loss = "cross_entropy" if data.labels is not None else "distill"
        if self.loss == "distill" and teacher is None:
            raise BadInputError("the training data has no 'labels' and there is no teacher model to distil from")
        self.teacher = teacher if self.loss == "distill" else None
        self.rng = np.random.default_rng([options.train.seed, 7])  # topology draws (SET start, regrowth)
        self.history: list[dict] = []
        self.info: dict = {}

    def density(self, layer: Layer) -> float:
        return 1.0 - self.options.sparsity[layer.kind]

    def run(self, model: onnx.ModelProto, epochs: int, masks: Mapping[str, np.ndarray] | None = None,
            first_epoch: int = 1) -> TrainingRun:
        """A training phase; masks of weights the gradient does not reach are applied once (they never change)."""
        masks = dict(masks or {})
        model = apply_masks(model, masks) if masks else model
        run = TrainingRun(model, self.data, epochs, self.options.train, loss=self.loss, teacher=self.teacher,
                          val_data=self.val_data, bar=self.bar, first_epoch=first_epoch)
        run.set_masks({k: v for k, v in masks.items() if k in run.trainable})
        return run

    def epoch(self, run: TrainingRun, phase: str) -> dict:
        entry = {"epoch": run.epochs_done + 1, "phase": phase, **run.epoch()}
        self.history.append(entry)
        return entry

    def magnitude_masks(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        """Per layer, keep the largest |w| at the layer kind's density."""
        weights = read_weights(model, [layer.name for layer in self.layers])
        return {layer.name: magnitude_mask(weights[layer.name], self.density(layer)) for layer in self.layers}


def _rewire(job: _Job, run: TrainingRun, masks: dict[str, np.ndarray], keep: Mapping[str, int], epoch: int) -> dict:
    """Cut and regrow every trainable layer to `keep[name]` active weights after `epoch`; the counts, summed."""
    zeta = job.options.zeta * ZETA_DECAYS[job.options.zeta_decay](epoch, job.options.epochs)
    pruned = regrown = 0
    live = set(run.trainable)
    new_masks = dict(masks)
    regrown_at: dict[str, np.ndarray] = {}
    for layer in job.layers:
        if layer.name not in live:
            continue
        grow = int(round(zeta * keep[layer.name]))
        new_masks[layer.name], change = prune_and_regrow(run.weight(layer.name), masks[layer.name],
                                                         keep[layer.name], grow, job.rng)
        pruned += change.pruned
        regrown += change.regrown
        regrown_at[layer.name] = change.regrown_index
    run.set_masks({k: v for k, v in new_masks.items() if k in live})
    for name, index in regrown_at.items():
        run.regrow(name, index)
    masks.update(new_masks)
    return {"pruned": pruned, "regrown": regrown}


def _split(epochs: int, share: float) -> tuple[int, int]:
    """(dense epochs, fine-tune epochs): the fine-tune share rounded up, so a short run still fine-tunes."""
    after = min(epochs, max(1, math.ceil(share * epochs))) if share > 0 else 0
    return epochs - after, after


# ---- the schedules ----------------------------------------------------------------------------------

def _dense(job: _Job):
    run = job.run(job.model, job.options.epochs)
    for _ in range(job.options.epochs):
        job.epoch(run, "dense")
    return run.result(), {}


def _pre(job: _Job):
    masks = job.magnitude_masks(job.model)
    run = job.run(job.model, job.options.epochs, masks)
    for _ in range(job.options.epochs):
        job.epoch(run, "sparse")
    return run.result(), masks


def _train_dense_first(job: _Job):
    """The dense phase the post-training schedules share: (model, dense epochs, epochs left to tune)."""
    dense_epochs, tune_epochs = _split(job.options.epochs, job.options.finetune_share)
    model = job.model
    if dense_epochs:
        run = job.run(model, dense_epochs)
        for _ in range(dense_epochs):
            job.epoch(run, "dense")
        model = run.result()
    return model, dense_epochs, tune_epochs


def _post(job: _Job):
    model, dense_epochs, tune_epochs = _train_dense_first(job)
    masks = job.magnitude_masks(model)
    job.info["pruned_after_epoch"] = dense_epochs
    run = job.run(model, tune_epochs, masks, first_epoch=dense_epochs + 1)
    for _ in range(tune_epochs):
        job.epoch(run, "fine-tune")
    return run.result(), masks


def _ramp_epochs(epochs: int, ramp: float) -> int:
    return max(1, math.ceil(ramp * (epochs - 1))) if epochs > 1 else 1


def _in(job: _Job):
    epochs = job.options.epochs
    ramp = _ramp_epochs(epochs, job.options.ramp)
    job.info.update({"ramp_epochs": ramp, "zeta": job.options.zeta, "ramp": "cubic (Zhu & Gupta 2017)"})
    masks = {layer.name: np.ones(layer.shape, dtype=bool) for layer in job.layers}
    run = job.run(job.model, epochs, masks)
    frozen = [layer.name for layer in job.layers if layer.name not in run.trainable]
    if frozen:  # weights the gradient does not reach never change: prune them to the target once, up front
        target = job.magnitude_masks(job.model)
        masks.update({name: target[name] for name in frozen})
        run = job.run(job.model, epochs, masks)
        job.info["pruned_up_front"] = frozen
    for e in range(1, epochs + 1):
        entry = job.epoch(run, "sparse" if e > ramp else "ramp")
        if e == epochs:
            break
        share = 1.0 - (1.0 - min(1.0, e / ramp)) ** 3
        keep = {layer.name: keep_count(layer.size, 1.0 - share * job.options.sparsity[layer.kind])
                for layer in job.layers}
        entry.update(_rewire(job, run, masks, keep, e))
    model = run.result()
    if epochs == 1:  # no step between epochs to prune in: prune at the end, without fine-tuning
        masks = job.magnitude_masks(model)
        model = apply_masks(model, masks)
    return model, masks


def _set(job: _Job):
    densities, epsilons = er_densities(job.layers, job.options.sparsity)
    job.info.update({"epsilon": epsilons, "zeta": job.options.zeta,
                     "densities": {k: round(v, 6) for k, v in densities.items()}})
    masks = {layer.name: random_mask(layer.shape, densities[layer.name], job.rng) for layer in job.layers}
    keep = {name: int(mask.sum()) for name, mask in masks.items()}
    run = job.run(job.model, job.options.epochs, masks)
    for e in range(1, job.options.epochs + 1):
        entry = job.epoch(run, "sparse")
        if e < job.options.epochs:
            entry.update(_rewire(job, run, masks, keep, e))
    return run.result(), masks


def _channels_to_params(model: onnx.ModelProto, kept: float, round_to: int = 8) -> tuple[onnx.ModelProto, Plan]:
    """The model with the lowest-L2 channels of every group removed until `kept` of the parameters remain."""
    dep = build_dependency(ModelGraph(fold_constants(model)))
    scores, costs = score(dep, "l2"), CostModel(dep)
    plan = search_ratio(lambda share: select_uniform(dep, scores, share, round_to=round_to),
                        lambda p: costs.params_after(p.removed) / costs.total_params, kept, scores=scores,
                        round_to=round_to)
    return apply_plan(plan), plan


def _post_structured(job: _Job):
    model, dense_epochs, tune_epochs = _train_dense_first(job)
    total = sum(layer.size for layer in job.layers)
    kept = sum(keep_count(layer.size, job.density(layer)) for layer in job.layers) / total
    pruned, plan = _channels_to_params(model, kept)
    job.info.update({"target_params": round(kept, 4), "plan": {k: v for k, v in plan.summary().items()
                                                              if k in ("channels", "removed")}})
    run = job.run(pruned, tune_epochs, first_epoch=dense_epochs + 1)
    for _ in range(tune_epochs):
        job.epoch(run, "fine-tune")
    return run.result(), {}


@dataclass(frozen=True)
class Schedule:
    title: str
    run: Callable[[_Job], tuple[onnx.ModelProto, dict]]
    structured: bool = False
    summary: str = ""


SCHEDULES: dict[str, Schedule] = {
    "dense": Schedule("Dense", _dense, summary="no pruning (baseline, same epochs)"),
    "pre": Schedule("Pre-Training", _pre, summary="weakest |w| pruned at initialisation, masks kept"),
    "in": Schedule("In-Training", _in, summary="ramp up, then cut the weakest and regrow as many each epoch"),
    "post": Schedule("Post-Training", _post, summary="train dense, prune weakest |w|, fine-tune"),
    "set": Schedule("SET", _set, summary="Erdos-Renyi sparse start, cut zeta smallest |w|, regrow randomly"),
    "post-structured": Schedule("Post-Training (channels)", _post_structured, structured=True,
                                summary="train dense, remove channels (same params), fine-tune"),
}


def train_schedule(model: onnx.ModelProto, data: Dataset, schedule: str = "set",
                   options: ScheduleOptions | None = None, *, val_data: Dataset | None = None,
                   teacher: onnx.ModelProto | None = None, bar=None) -> ScheduleResult:
    """Train `model` on `data` under `schedule` (a key of SCHEDULES) and return the sparse model.

    With labels in `data` the loss is cross-entropy; without, distillation from `teacher` (default:
    `model` itself as given). `val_data` adds validation figures to the history; the model returned
    is the last epoch's (no selection on validation data).
    """
    if schedule not in SCHEDULES:
        raise BadInputError(f"unknown schedule '{schedule}'; choose one of {', '.join(SCHEDULES)}")
    options = options or ScheduleOptions()
    job = _Job(schedule, model, data, options, val_data, teacher if teacher is not None else model, bar)
    trained, masks = SCHEDULES[schedule].run(job)
    return ScheduleResult(schedule, trained, masks, job.history, _layer_table(job, trained, masks), job.info)


def _layer_table(job: _Job, model: onnx.ModelProto, masks: dict[str, np.ndarray]) -> list[dict]:
    present = {i.name for i in model.graph.initializer} | {n.output[0] for n in model.graph.node
                                                           if n.op_type == "Constant" and n.output}
    values = read_weights(model, [layer.name for layer in job.layers if layer.name in present])
    rows = []
    for layer in job.layers:
        value = values.get(layer.name)
        nonzero = int(np.count_nonzero(value)) if value is not None else 0
        rows.append({"name": layer.name, "kind": layer.kind, "shape": list(layer.shape), "size": layer.size,
                     "kept": int(masks[layer.name].sum()) if layer.name in masks else nonzero,
                     "nonzero": nonzero, "sparsity": round(1.0 - nonzero / layer.size, 6)})
    return rows
