"""FineTune: train the model's weights in ONNX Runtime, distilling from the dense model by default."""

from __future__ import annotations

import onnx

from onnxprune import progress
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult, register


@register
class FineTune(Pass):
    """`epochs` of in-graph training on `train` (a .npz; default: the context's calibration data).

    Without `labels` the dense model is the teacher (no labels needed); with `labels=True` the data's
    labels drive a cross-entropy loss. `val` picks the best epoch; weights are written back by name.
    """

    def __init__(self, epochs: int = 3, train=None, val=None, labels: bool = False, lr: float = 1e-3,
                 batch_size: int = 64, minutes: float | None = None, augment: str | None = None):
        if int(epochs) < 1:
            raise BadInputError(f"pass FineTune: epochs must be at least 1, got {epochs}")
        self.epochs, self.train, self.val = int(epochs), train, val
        self.labels, self.lr, self.batch_size = bool(labels), float(lr), int(batch_size)
        self.minutes, self.augment = minutes, augment  # a time cap; flip,crop,scale

    def options(self) -> dict:
        return {"epochs": self.epochs, "train": self.train, "val": self.val, "labels": self.labels, "lr": self.lr,
                "batch_size": self.batch_size, "minutes": self.minutes, "augment": self.augment}

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        from onnxprune.options import FinetuneOptions
        from onnxprune.finetune_stage import finetune_model

        train = self.train if self.train is not None else context.calib
        tune = FinetuneOptions(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, labels=self.labels,
                               minutes=self.minutes, augment=self.augment)
        trained, fragment = finetune_model(model, tune, train, teacher=context.dense, val=self.val, seed=context.seed,
                                           threads=context.threads, progress=progress.enabled())
        return PassResult(trained, True, {"finetune": fragment})
