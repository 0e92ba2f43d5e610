"""Which outputs distillation trains toward: every float output the model has.

Until wave 18 fine-tuning distilled the first output alone. On a model with several (MTCNN: box
offsets, then landmarks, then face scores; a PicoDet layout detector: a score and a box tensor per
scale; silero VAD: the speech probability and the recurrent state) the shared layers moved to fit
that one, the heads of the others never trained, and neither the held-out ranking nor the guard
looked at them; on MTCNN the one output trained was the box offsets, under a KL that treats four
coordinates as class logits.

Now one output is the primary, distilled by the chosen loss (KL on class scores, the detect loss on a
detector's packed rows): the first output a final Softmax produces when there is one (the loss made
for class scores), else the first float output. Every other float output is matched by squared error
relative to the teacher's energy (autodiff/feature_loss.py), each at the primary's weight, in
training, in the held-out loss and in the guard alike. An output that does not hold one row per sample on
the batch axis (the batch elsewhere, rows that depend on the data) cannot be cut into per-sample targets and is
left out (said in the log), as is one behind an op without a gradient rule (autodiff/analysis.py).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.logits import CLASSES_LAST, sigmoid_input, softmax_logits
from onnxprune.recover.targets import feeds_of

log = logging.getLogger("onnxprune")
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                         onnx.TensorProto.BFLOAT16})
OTHERS_WEIGHT = 1.0  # each other output's term beside the primary's loss


def float_outputs(model: onnx.ModelProto) -> list[str]:
    """Names of the model's tensor outputs of a float type, in order."""
    return [o.name for o in model.graph.output
            if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in FLOAT_TYPES]


def distilled_outputs(model: onnx.ModelProto, teacher: onnx.ModelProto, given: str | None, data: Dataset,
                      batchable: bool, threads: int = 0) -> tuple[str | None, list[str]]:
    """(primary output, other outputs matched beside it). `given`: the output the user named, alone."""
    if given is not None:
        return given, []
    shared = set(float_outputs(teacher))
    floats = [name for name in float_outputs(model) if name in shared]
    if not floats:
        return None, []  # the builder says why nothing can be distilled
    primary = primary_output(model, floats)
    # float32 only: the terms join the float32 loss (a float16 model trains as its float32 twin already)
    others = [name for name in floats if name != primary and _elem_type(model, name) == onnx.TensorProto.FLOAT]
    others = per_sample(teacher, others, data, batchable, threads) if others else []
    if others:
        log.info("distilling '%s', and %d other outputs by relative squared error: %s", primary, len(others),
                 ", ".join(others))
    return primary, others


def primary_output(model: onnx.ModelProto, floats: list[str] | None = None) -> str | None:
    """The output the loss is put on: the first of `floats` (default: the model's float outputs) that a final
    Softmax produces, else the first a final Sigmoid produces, else the first of them; None when there is none."""
    floats = float_outputs(model) if floats is None else floats
    return next((name for name in floats if softmax_logits(model, name)),
                next((name for name in floats if sigmoid_input(model, name)), floats[0] if floats else None))


def besides(others: list[str], distilled: str | None) -> list[str]:
    """`others` without the tensor the primary's loss reads (its logits, exported too) or its source."""
    source = distilled.removesuffix(CLASSES_LAST) if distilled else None
    return [name for name in others if name not in (distilled, source)]


def per_sample(teacher: onnx.ModelProto, names: list[str], data: Dataset, batchable: bool,
               threads: int = 0) -> list[str]:
    """The outputs among `names` that hold one sample's values per sample: the same shape on two samples and,
    when samples are joined on axis 0, one row each there. Others (rows that depend on the data, such as
    filtered detections; the batch on another axis) cannot be cut into targets per sample."""
    if len(data) < 2:
        return []
    sess = session(teacher, threads)
    one, other = (sess.run(names, feeds_of(data, np.array([i]), batchable)) for i in (0, 1))
    two = sess.run(names, feeds_of(data, np.arange(2), True)) if batchable else other
    kept = [name for name, a, b, j in zip(names, one, other, two)
            if a.shape == b.shape and (not batchable or (a.ndim >= 1 and a.shape[0] == 1
                                                          and j.shape == (2, *a.shape[1:])))]
    if len(kept) < len(names):
        log.info("not distilled (not one row per sample on the batch axis): %s",
                 ", ".join(n for n in names if n not in kept))
    return kept


def _elem_type(model: onnx.ModelProto, name: str) -> int:
    return next(o.type.tensor_type.elem_type for o in model.graph.output if o.name == name)


__all__ = ["besides", "distilled_outputs", "float_outputs", "per_sample", "primary_output", "OTHERS_WEIGHT"]
