"""Bounded training memory: a batch run as micro-batches whose gradients are summed before the step.

A training step keeps every forward activation for the backward pass, so its memory grows with the
batch (PP-OCRv4 rec at half the MACs: about 140 MB per 48x320 line, 5 GB at batch 32). The batch is
split so that all one micro-batch's step holds fits a budget (counted by recover/step_memory.py: the
activations, their gradients, the teacher and the targets); the gradient of the mean loss is the
sample-weighted mean of the micro-batches' gradients, so the optimizer step is the batch's own.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from onnxprune.graph.model_graph import ModelGraph

ACTIVATION_BUDGET_MB = 1024  # the former budget, activations alone (step_memory.STEP_BUDGET_MB replaced it)


def activation_bytes(model: onnx.ModelProto, sample_shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Bytes of every node output for one sample (float32), from the model's concrete shapes."""
    g = ModelGraph(model, dict(sample_shapes))
    outputs = {t for n in g.nodes for t in n.outputs}
    return sum(int(np.prod(s)) * 4 for t, s in g.shapes.items() if t in outputs and s is not None)


def micro_batch(batch: int, per_sample: int, budget_mb: float = ACTIVATION_BUDGET_MB) -> int:
    """The largest micro-batch (at most `batch`) whose `per_sample` bytes fit `budget_mb`."""
    return int(max(1, min(batch, budget_mb * 2**20 // max(per_sample, 1))))


class MicroBatched:
    """step(feeds, target) -> (loss, logits) like TrainStep, running at most `micro` samples at a time
    and leaving the batch's gradient in params.grad. A target with a `resolve(feeds)` method (targets.Pending)
    is computed per micro-batch, so the teacher's run and its feature targets stay micro-batch sized."""

    def __init__(self, step, params, micro: int):
        self.step, self.params, self.micro = step, params, micro
        self._acc = None

    def __call__(self, feeds: Mapping[str, np.ndarray], target) -> tuple[float, np.ndarray]:
        n = len(target)
        resolve = getattr(target, "resolve", None)
        if n <= self.micro:
            return self._resolved(dict(feeds), resolve) if resolve else self.step(feeds, target)
        if self._acc is None:
            self._acc = np.zeros_like(self.params.grad)
        self._acc[...] = 0.0
        loss, outs = 0.0, []
        for start in range(0, n, self.micro):
            part = slice(start, min(n, start + self.micro))
            share = (part.stop - part.start) / n
            part_feeds = {k: np.ascontiguousarray(v[part]) for k, v in feeds.items()}
            value, logits = self._resolved(part_feeds, resolve) if resolve else \
                self.step(part_feeds, np.ascontiguousarray(target[part]))
            self._acc += self.params.grad * np.float32(share)
            loss += value * share
            outs.append(logits)
        self.params.grad[...] = self._acc
        return loss, np.concatenate(outs)

    def _resolved(self, feeds: dict[str, np.ndarray], resolve) -> tuple[float, np.ndarray]:
        target = resolve(feeds)  # adds the feature targets to feeds
        return self.step(feeds, target)


class Chunked:
    """forward(feeds) -> output like autodiff.runner.Forward, at most `micro` samples per run: held-out
    scoring at the training batch would otherwise grow the inference arena past the step's budget."""

    def __init__(self, forward, micro: int):
        self.forward, self.micro = forward, micro

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray | list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        if n <= self.micro:
            return self.forward(feeds)
        parts = [self.forward({k: v[i:i + self.micro] for k, v in feeds.items()}) for i in range(0, n, self.micro)]
        if isinstance(parts[0], list):  # several outputs: each joined on its batch axis
            return [np.concatenate([np.array(p[k]) for p in parts]) for k in range(len(parts[0]))]
        return np.concatenate([np.array(p) for p in parts])
