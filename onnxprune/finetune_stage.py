"""Fine-tuning as a pipeline stage: any data source checked against the model, then trained in ONNX
Runtime (recover/finetune.py), with the report's `finetune` fragment."""

from __future__ import annotations

import onnx

from onnxprune.errors import BadInputError
from onnxprune.load.fit import check_fits
from onnxprune.load.train_data import check_sample_shapes
from onnxprune.load.spill import model_bytes
from onnxprune.options import FinetuneOptions
from onnxprune.recover.finetune import finetune
from onnxprune.stages import _join_or_not, _source_name, as_dataset


def finetune_model(model: onnx.ModelProto, tune: FinetuneOptions, train, *, teacher: onnx.ModelProto | None = None,
                   val=None, seed: int = 0, threads: int = 0, progress: bool = False, guard=None) -> tuple[onnx.ModelProto, dict]:
    """Train `model` in ONNX Runtime on `train` (any data source): distillation from `teacher`, or
    cross-entropy on the data's labels; the trained model and the report's `finetune` fragment. `guard`: the
    calibration data when `train` is other data (an epoch worse on it than epoch 0 is not kept)."""
    source, val_source = _source_name(train, "training data"), _source_name(val, "validation data")
    train = as_dataset(train, model)
    if train is None:
        raise BadInputError("fine-tuning needs training data: pass --calib or --train-data DATA.npz")
    if tune.labels and train.labels is None:
        raise BadInputError(f"{source}: --labels needs a 'labels' array in the training data; it holds none")
    check_fits(model, train, source, labels=tune.labels)
    val = as_dataset(val, model)
    if val is not None:
        check_fits(model, val, val_source)
    check_sample_shapes(model, train, source)
    guard = as_dataset(guard, model)
    _join_or_not(model, model_bytes(model), train, val, guard)  # --train-data is read here: a baked batch 1 feeds it singly
    result = finetune(model, train, tune.epochs or (None if tune.minutes else 0), loss=tune.loss,
                      teacher=None if tune.labels else teacher, lr=tune.lr, batch_size=tune.batch_size, val_data=val,
                      seed=seed, progress=progress, threads=threads, minutes=tune.minutes, augment=tune.augment,
                      checkpoint=tune.checkpoint, resume=tune.resume, features=tune.features,
                      distill=tune.distill, select=tune.select, guard_data=None if tune.labels else guard)
    history = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()} for h in result.history]
    return result.model, {"epochs": len(result.history) - 1, "loss": tune.loss, "lr": result.lr, "samples": len(train),
                          "distill": result.distill, "select": tune.select, "other_outputs": result.others,
                          "best_epoch": result.best_epoch, "stopped": result.stopped,
                          "resumed_from": result.resumed_from, "history": history}
