"""Validate: every validity check against the dense model, fidelity, and optional quality gates."""

from __future__ import annotations

import onnx

from onnxprune.check.gates import check_thresholds, evaluate_gates
from onnxprune.check.validate import validate_pair
from onnxprune.passes.base import Pass, PassContext, PassResult, register

FLAGS = ("min_cosine", "max_drop")


@register
class Validate(Pass):
    """Check the current model against the context's dense model (checker, strict shape inference,
    ONNX Runtime on every installed provider, unchanged interface) and measure fidelity on the
    evaluation data. `min_cosine` and `max_drop` (accuracy points, needs labels) are gates: a miss
    is recorded in the result and the pipeline stops there. Read-only: returns the model it is given."""

    in_place = True  # the same object back, untouched (changes_input stays False)

    def __init__(self, min_cosine: float | None = None, max_drop: float | None = None):
        check_thresholds(min_cosine, max_drop, FLAGS)
        self.min_cosine, self.max_drop = min_cosine, max_drop

    def options(self) -> dict:
        return {k: v for k, v in (("min_cosine", self.min_cosine), ("max_drop", self.max_drop)) if v is not None}

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        data, kind = context.data_or_synthetic()
        checked = validate_pair(context.dense, model, data, context.threads)
        fidelity = {"data": kind, **checked["fidelity"]}
        gates = evaluate_gates(fidelity, self.min_cosine, self.max_drop, FLAGS)
        report = {"validation": checked["validation"], "fidelity": fidelity, "gates": [g.as_dict() for g in gates]}
        return PassResult(model, False, report, gates)
