"""Intermediate-feature distillation terms: the student's tensor matched to the teacher's.

Each feature adds weight / len(features) * sum((s - t)^2) / sum(t^2) to the loss: a squared error
relative to the teacher's energy, so features of any scale count alike. The teacher's tensor is a
graph input (the run feeds it per batch) and does not depend on the weights, so the gradient with
respect to the student's tensor is 2 w (s - t) / sum(t^2), seeded straight into the backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.autodiff.context import GradContext

ENERGY_FLOOR = 1e-12  # a teacher tensor of zeros would divide by zero


@dataclass
class FeatureTerms:
    loss: str | None = None                                 # scalar: the sum of the terms (None: no features)
    seeds: dict[str, str] = field(default_factory=dict)     # student tensor -> d loss / d tensor
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)  # the teacher tensors, fed per batch
    targets: dict[str, str] = field(default_factory=dict)   # student tensor -> its teacher input's name


def emit_feature_terms(ctx: GradContext, features: Sequence[str], weight: float) -> FeatureTerms:
    out = FeatureTerms()
    if not features or weight <= 0:
        return out
    share = weight / len(features)
    terms = []
    for name in features:
        teacher = ctx.reserve(f"{name}_teacher")
        rank = len(ctx.shape(name))
        out.inputs.append(helper.make_tensor_value_info(teacher, ctx.elem_type(name),
                                                        [f"{teacher}_{i}" for i in range(rank)]))
        out.targets[name] = teacher
        diff = ctx.emit("Sub", [name, teacher])
        energy = ctx.emit("ReduceSum", [ctx.emit("Mul", [teacher, teacher])], keepdims=0)
        energy = ctx.emit("Max", [energy, ctx.scalar(ENERGY_FLOOR, name)])
        squared = ctx.emit("ReduceSum", [ctx.emit("Mul", [diff, diff])], keepdims=0)
        terms.append(ctx.emit("Mul", [ctx.emit("Div", [squared, energy]), ctx.scalar(share, name)]))
        out.seeds[name] = ctx.emit("Div", [ctx.emit("Mul", [diff, ctx.scalar(2.0 * share, name)]), energy])
    out.loss = terms[0] if len(terms) == 1 else ctx.emit("Sum", terms)
    return out


def numpy_feature_loss(student: Sequence[np.ndarray], teacher: Sequence[np.ndarray], weight: float) -> float:
    """The same terms in float64 numpy (tests)."""
    share = weight / max(1, len(student))
    return float(sum(share * np.sum((np.float64(s) - t) ** 2) / max(np.sum(np.float64(t) ** 2), ENERGY_FLOOR)
                     for s, t in zip(student, teacher)))
