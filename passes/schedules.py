"""Training-time pruning schedules as passes: PreTraining, InTraining, PostTraining, SET and
PostTrainingStructured (or TrainSchedule with `schedule = "..."`).

    [[passes]]
    pass = "SET"
    epochs = 20
    linear_sparsity = 0.8

Training data: `train_data` (a .npz path or a Dataset) or else the context's calibration data;
labels train on cross-entropy, without them the context's dense model is distilled. The context's
evaluation data, if any, adds validation figures to the report's history.
"""

from __future__ import annotations

from typing import Any, ClassVar

import onnx

from onnxprune import progress
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult, register


@register
class TrainSchedule(Pass):
    """Train the model under a pruning schedule (see onnxprune.recover.schedules) and return the sparse result."""

    schedule_name: ClassVar[str | None] = None  # fixed by the subclasses below

    # the schedule's options and their defaults (ScheduleOptions and TrainConfig fields, flattened)
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "epochs": 10, "conv_sparsity": 0.5, "linear_sparsity": 0.8, "zeta": 0.3, "zeta_decay": "constant",
        "ramp": 0.5, "finetune_share": 0.5, "reinit": None, "lr": None, "batch_size": 64, "optimizer": "adamw"}

    def __init__(self, schedule: str | None = None, train_data: Any = None, seed: int | None = None, **options):
        from onnxprune.recover.schedules import SCHEDULES, ScheduleOptions, TrainConfig

        unknown = sorted(set(options) - set(self.DEFAULTS))
        if unknown:
            known = (["schedule"] if self.schedule_name is None else []) + [*self.DEFAULTS, "train_data", "seed"]
            raise BadInputError(f"pass {self.pass_name()}: unknown option(s) {', '.join(unknown)}; "
                                f"known: {', '.join(known)}")
        schedule = self.schedule_name or schedule
        if schedule not in SCHEDULES:
            raise BadInputError(f"pass {self.pass_name()}: schedule must be one of {', '.join(SCHEDULES)}, "
                                f"got {schedule!r}")
        self.schedule = schedule
        self.train_data = train_data
        self.seed = seed
        o = {**self.DEFAULTS, **options}
        self.schedule_options = ScheduleOptions(
            epochs=o["epochs"], sparsity={"conv": o["conv_sparsity"], "linear": o["linear_sparsity"]}, zeta=o["zeta"],
            zeta_decay=o["zeta_decay"], ramp=o["ramp"], finetune_share=o["finetune_share"], reinit=o["reinit"],
            train=TrainConfig(lr=o["lr"], batch_size=o["batch_size"], optimizer=o["optimizer"], seed=seed or 0))

    def options(self) -> dict:
        o = self.schedule_options
        out = {"epochs": o.epochs, "conv_sparsity": o.sparsity["conv"], "linear_sparsity": o.sparsity["linear"],
               "zeta": o.zeta, "zeta_decay": o.zeta_decay, "ramp": o.ramp, "finetune_share": o.finetune_share,
               "reinit": o.reinit,
               "lr": o.train.lr, "batch_size": o.train.batch_size, "optimizer": o.train.optimizer}
        if self.schedule_name is None:
            out = {"schedule": self.schedule, **out}
        if isinstance(self.train_data, str):
            out["train_data"] = self.train_data
        return out

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        from dataclasses import replace

        from onnxprune.score.calibration import load_calibration
        from onnxprune.graph.model_graph import resolve_input_shapes
        from onnxprune.recover.schedules import train_schedule

        source = self.train_data if self.train_data is not None else context.calib
        if source is None:
            raise BadInputError(f"pass {self.pass_name()} needs training data: set train_data or the calibration data")
        ranks = {k: len(v) for k, v in resolve_input_shapes(model, context.input_shapes).items()}
        data = load_calibration(source, ranks)
        val = context.evaluation_data() if context.data is not None else None
        options = self.schedule_options
        seed = self.seed if self.seed is not None else context.seed
        options = replace(options, train=replace(options.train, seed=seed, threads=context.threads))
        bar = progress.step_bar(self.pass_name(), options.epochs * -(-len(data) // options.train.batch_size))
        try:
            result = train_schedule(model, data, self.schedule, options, val_data=val, teacher=context.dense, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        report = {"schedule": self.schedule, "layers": result.layers, "info": result.info,
                  "history": result.history}
        return PassResult(result.model, True, report)


def _fixed(name: str, schedule: str, doc: str) -> type[TrainSchedule]:
    cls = type(name, (TrainSchedule,), {"schedule_name": schedule, "name": name, "__doc__": doc,
                                        "__module__": __name__})
    return register(cls)


PreTraining = _fixed("PreTraining", "pre", "Prune the weakest |w| at initialisation, train with the masks kept.")
InTraining = _fixed("InTraining", "in", "Train; after each epoch cut the weakest weights and regrow as many "
                                        "(sparsity ramped up, then fixed).")
PostTraining = _fixed("PostTraining", "post", "Train dense, prune the weakest |w| per layer, fine-tune with masks.")
SET = _fixed("SET", "set", "Sparse Evolutionary Training: Erdos-Renyi start, cut zeta smallest |w|, regrow randomly.")
PostTrainingStructured = _fixed("PostTrainingStructured", "post-structured",
                                "Train dense, remove channels with onnxprune.prune (same parameter count), fine-tune.")
