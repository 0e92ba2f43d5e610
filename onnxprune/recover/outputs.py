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
training, in the held-out loss and in the guard alike. An output whose batch does not come out on
axis 0 cannot be cut into per-sample rows and is left out (said in the log).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.logits import softmax_logits
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
    others = [name for name in floats if name != primary]
    if others and batchable and len(data) > 1:
        others = _batch_first(teacher, others, data, threads)
    if others:
        log.info("distilling '%s', and %d other outputs by relative squared error: %s", primary, len(others),
                 ", ".join(others))
    return primary, others


def primary_output(model: onnx.ModelProto, floats: list[str] | None = None) -> str | None:
    """The output the loss is put on: the first of `floats` (default: the model's float outputs) that a final
    Softmax produces, else the first of them; None when the model has no float output."""
    floats = float_outputs(model) if floats is None else floats
    return next((name for name in floats if softmax_logits(model, name)), floats[0] if floats else None)


def _batch_first(teacher: onnx.ModelProto, names: list[str], data: Dataset, threads: int) -> list[str]:
    """The outputs whose rows for two joined samples are those of one sample, twice as many on axis 0."""
    sess = session(teacher, threads)
    one = sess.run(names, feeds_of(data, np.arange(1), True))
    two = sess.run(names, feeds_of(data, np.arange(2), True))
    kept = [name for name, a, b in zip(names, one, two)
            if a.ndim >= 1 and b.shape == (2 * a.shape[0], *a.shape[1:])]
    if len(kept) < len(names):
        log.info("not distilled (the batch is not on their first axis): %s",
                 ", ".join(n for n in names if n not in kept))
    return kept


__all__ = ["distilled_outputs", "float_outputs", "primary_output", "OTHERS_WEIGHT"]
