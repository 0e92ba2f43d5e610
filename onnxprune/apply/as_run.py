"""The model as it will run, for timing: a plan applied and, for a QDQ model, its lifted weights lowered
back to integers (apply/qdq_lower.py). Criteria and recovery read the lifted float weights
(load/qdq_lift.py), but ONNX Runtime runs the user's model with integer kernels (QLinearConv, QGemm),
whose time per width is not the float kernels': a latency profile or landing that timed the float
graph would aim a quantized model at the wrong ratio."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxprune.apply.qdq_lower import lower
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.plan import Plan
from onnxprune.couple.vocabulary import Slot
from onnxprune.load.qdq_params import QuantParams

Build = Callable[[Plan], onnx.ModelProto]


def as_run(lifted: dict[str, QuantParams] | None = None) -> Build:
    """plan -> the pruned model as it will run (unrecovered: recovery changes values, not kernels)."""
    if not lifted:
        return apply_plan

    def build(plan: Plan) -> onnx.ModelProto:
        kept = plan.dep.kept_indices(plan.removed)
        return lower(apply_plan(plan), lifted, lambda tensor, axis: kept.get(Slot(tensor, axis)))
    return build


def dense_as_run(dep: Dependency, lifted: dict[str, QuantParams] | None = None) -> onnx.ModelProto:
    """The analysed model as it will run, nothing pruned: the analysed model itself unless weights were lifted."""
    if not lifted:
        return dep.graph.model
    return as_run(lifted)(Plan(dep, np.zeros(dep.num_channels, dtype=bool)))
