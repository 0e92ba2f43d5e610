"""Which distillation loss the primary output gets, and on which tensor.

`auto` (the default) reads what the output is:
- class scores from a final Softmax: KL at temperature T on the logits the Softmax reads (logits.py);
- yes/no scores from a final Sigmoid (a binary or multi-label classifier, a voice-activity probability, a
  text detector's probability map): binary KL per element on the logits the Sigmoid reads. Until wave 18
  these went to the softmax KL, which for a single score (N, 1) is a softmax over one value, identically
  zero: such a model never trained, and said only "kept epoch 0";
- a detector's packed rows (score rows beside box rows): the detect loss (detect_distill.py; NudeNet 320n
  at half the MACs 54.55 -> 70.59 face F1 where the softmax KL over anchors kept 55.17);
- any other output with one value per row (a regression, a score without its Sigmoid): squared error;
- anything else (logits without a final Softmax): KL on them.
`balanced` is used only when asked: on NudeNet it ended below plain squared error (wave 11).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx

from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.recover.detect_distill import packed_scores
from onnxprune.recover.distill_weights import BALANCE_SAMPLES, balance_weights, spread
from onnxprune.recover.logits import logits_views
from onnxprune.recover.targets import spread_outputs

log = logging.getLogger("onnxprune")
AUTO_SAMPLES = 8  # teacher outputs auto reads to tell a detector's rows (the guard's check reads 8 too)


def on_logits(model: onnx.ModelProto, teacher: onnx.ModelProto, output: str | None, mode: str
              ) -> tuple[onnx.ModelProto, onnx.ModelProto, str | None, str | None]:
    """(student, teacher, tensor distilled, "softmax" | "sigmoid" | None): the logits a final Softmax (or, for
    `auto` and `binary`, a final Sigmoid) reads, exposed in both models; the output itself otherwise."""
    kinds = ("softmax", "sigmoid") if mode in ("auto", "binary") else ("softmax",)
    for kind in kinds:
        found = logits_views(model, teacher, output, kind)
        if found is not None:
            log.info("distilling the logits '%s' that the output %s reads", found[2], kind.capitalize())
            return (*found, kind)
    return model, teacher, output, None


def choose(mode: str, teacher: onnx.ModelProto | None, output: str | None, data: Dataset, batchable: bool,
           squash: str | None, threads: int) -> tuple[str, np.ndarray | None]:
    """The loss (`mode` with "auto" resolved) and, for "balanced", its per-channel weights."""
    if mode == "binary" and squash != "sigmoid":
        raise BadInputError("--distill binary needs an output that a final Sigmoid produces; "
                            f"'{output}' is not one (use kl, mse or balanced)")
    if teacher is None or mode not in ("auto", "balanced"):
        return ("kl" if mode == "auto" else mode), None
    if mode == "auto":
        return _auto(teacher, output, data, batchable, squash, threads), None
    out = spread_outputs(teacher, output, data, BALANCE_SAMPLES, batchable, threads, step=64)
    log.info("distilling '%s' by squared error balanced per channel (variances spread %.3g x)",
             output or teacher.graph.output[0].name, spread(out))
    return "balanced", balance_weights(out)


def _auto(teacher: onnx.ModelProto, output: str | None, data: Dataset, batchable: bool, squash: str | None,
          threads: int) -> str:
    if squash is not None:
        return {"softmax": "kl", "sigmoid": "binary"}[squash]
    name = output or teacher.graph.output[0].name
    dims = _declared_dims(teacher, name)
    if dims is not None and 0 < len(dims) < 3 and dims[-1] > 1:
        return "kl"  # a classifier's (N, C) holds no detector rows: no teacher run
    out = spread_outputs(teacher, output, data, AUTO_SAMPLES, batchable, threads, step=AUTO_SAMPLES)
    if out.ndim <= 1 or out.shape[-1] == 1:  # (N,) from joined samples: one value per sample too
        log.info("distilling '%s' by squared error: one value per row (a softmax over it would be constant)", name)
        return "mse"
    if out.ndim >= 3 and packed_scores(out):
        log.info("distilling '%s' by the detect loss: score rows beside box rows", name)
        return "detect"
    return "kl"


def _declared_dims(model: onnx.ModelProto, name: str) -> list[int] | None:
    """The output's declared dimensions (0 where symbolic), or None when it declares no shape."""
    found = next((o for o in model.graph.output if o.name == name), None)
    if found is None or not found.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value for d in found.type.tensor_type.shape.dim]


__all__ = ["AUTO_SAMPLES", "choose", "on_logits"]
