"""What one training step holds, per sample, so that the micro-batch split bounds all of it.

A step keeps the student's forward values for the backward pass, and the backward adds their gradients
(counted at the same size: its working set at the widest). When the targets come from the teacher per
batch (augmented inputs, outputs too large to keep, feature distillation), the teacher runs inside the
step on the same micro-batch: its forward's working set (the most values alive at once), the output
target, and for each feature the teacher's tensor as returned, the kept-channel copy fed to the student
and the loss's difference and gradient at the student's width. recover/microbatch.py splits the batch
so that the sum of these per micro-batch fits the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx

from onnxprune.graph.model_graph import ModelGraph

# One micro-batch's step. 2 GB = the former 1 GB of activations plus their gradients, so a step without a
# teacher inside it splits as before (PP-OCRv4 rec at batch 32 measured under 2 GB of peak memory).
STEP_BUDGET_MB = 2048
FLOAT_BYTES = 4
FEATURE_COPIES = 3  # of the student-width feature: the copy fed, the loss's difference and its gradient


@dataclass(frozen=True)
class StepBytes:
    """Bytes per sample of one training step, by what holds them."""

    activations: int       # the student's forward values, kept for the backward pass
    gradients: int         # their gradients as the backward runs
    teacher: int = 0       # the teacher's forward working set, when it runs inside the step
    targets: int = 0       # the output target and the loss's per-element terms
    features: int = 0      # feature targets (teacher's and student-width copies, the loss's terms)

    @property
    def per_sample(self) -> int:
        return self.activations + self.gradients + self.teacher + self.targets + self.features

    def as_mb(self) -> dict[str, float]:
        return {k: round(v / 2**20, 2) for k, v in asdict(self).items()}


def _nbytes(shape) -> int:
    return int(np.prod(shape)) * FLOAT_BYTES if shape is not None else 0


def peak_live_bytes(g: ModelGraph) -> int:
    """The most bytes of node outputs alive at once when the nodes run in graph order: a tensor lives
    from its producer to its last consumer (graph outputs to the end); an inference run's working set."""
    last = {t: max(users) for t, users in g.consumers.items()}
    live = peak = 0
    for node in g.nodes:
        live += sum(_nbytes(g.shapes.get(t)) for t in node.outputs if t)
        peak = max(peak, live)
        for t in set(node.inputs):
            if t in g.producer and last.get(t) == node.index and t not in g.outputs:
                live -= _nbytes(g.shapes.get(t))
        for t in node.outputs:  # an output nothing reads is freed at once
            if t and t not in g.consumers and t not in g.outputs:
                live -= _nbytes(g.shapes.get(t))
    return peak


def step_bytes(student: onnx.ModelProto, sample_shapes: Mapping[str, tuple[int, ...]],
               teacher: onnx.ModelProto | None = None, output: str | None = None,
               features: Sequence[str] = (), teacher_per_batch: bool = False) -> StepBytes:
    """Per-sample bytes of a training step of `student` on samples shaped `sample_shapes` (batch 1).
    output: the distilled tensor (default: the first output); teacher_per_batch: the teacher runs inside
    the step (its working set counts); features: student tensors matched to the teacher's."""
    s = ModelGraph(student, dict(sample_shapes))
    produced = {t for n in s.nodes for t in n.outputs if t}
    activations = sum(_nbytes(shape) for t, shape in s.shapes.items() if t in produced)
    target = _nbytes(s.shapes.get(output or s.outputs[0]))
    t = ModelGraph(teacher, dict(sample_shapes)) if teacher is not None and (teacher_per_batch or features) else None
    feature_bytes = sum(FEATURE_COPIES * _nbytes(s.shapes.get(f)) + _nbytes(t.shapes.get(f) if t else None)
                        for f in features)
    return StepBytes(activations=activations, gradients=activations,
                     teacher=peak_live_bytes(t) if t is not None and teacher_per_batch else 0,
                     targets=2 * target, features=feature_bytes)


__all__ = ["StepBytes", "step_bytes", "peak_live_bytes", "STEP_BUDGET_MB"]
