"""What the student is trained toward, per batch: labels, or the dense teacher's outputs.

Teacher outputs are computed once and kept when they are small; when they would be large (PP-OCR
rec's 40 x 6625 probabilities per line: 1 GB for 1024 lines) or the batch is augmented, the teacher
runs on each batch instead, so memory stays bounded by the batch.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxprune.autodiff.builder import TrainingGraph
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.recover.features import with_outputs

KEEP_TARGETS_BYTES = 256 << 20  # teacher outputs above this are recomputed per batch
KEEP_CHUNK = 64  # samples per teacher run, unless the training's micro-batch plan sets `chunk`


def join(arr: np.ndarray, idx: np.ndarray, batchable: bool) -> np.ndarray:
    """Samples `idx` of a per-sample stack, joined on the model's batch axis."""
    if batchable:
        return np.ascontiguousarray(arr[idx].reshape((-1,) + arr.shape[2:]))
    return np.ascontiguousarray(arr[idx[0]])


def feeds_of(data: Dataset, idx: np.ndarray, batchable: bool) -> dict[str, np.ndarray]:
    return {k: join(v, idx, batchable) for k, v in data.inputs.items()}


def data_batchable(model: onnx.ModelProto, data: Dataset) -> bool:
    """Samples can be joined along axis 0 when every data input has a dynamic first axis (and the model
    was not found to fail on a joined batch: load/fit.joins)."""
    if not data.joinable:
        return False
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or inp.name not in data.inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return False
    return True


def spread_outputs(model: onnx.ModelProto, output: str | None, data: Dataset, n: int, batchable: bool,
                   threads: int = 0, step: int = 16) -> np.ndarray:
    """A model's output `output` (None: its first) on `n` samples spread evenly over `data` (data sorted by
    kind, such as an image folder read class by class, would show one kind in its first samples), `step`
    samples per run (one at a time when the samples do not batch), joined on the batch axis."""
    sess = session(model, threads)
    name = output or sess.get_outputs()[0].name
    picked = np.unique(np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(np.int64))
    step = step if batchable else 1
    return np.concatenate([sess.run([name], feeds_of(data, picked[i:i + step], batchable))[0]
                           for i in range(0, len(picked), step)])


class Targets:
    """targets(idx, feeds) -> the loss target for the batch of samples `idx` fed as `feeds`.

    Teacher outputs small enough to keep are computed on first use, `chunk` samples per teacher run, and
    the teacher's session is then let go. Otherwise (`per_batch`) the teacher runs on every batch, at most
    `chunk` samples at a time; with `lazy` a training batch's target is a Pending that the micro-batched
    step resolves per micro-batch (recover/microbatch.py), so neither the teacher's forward nor the
    feature targets are ever held for more than one micro-batch.
    """

    def __init__(self, tg: TrainingGraph, data: Dataset, teacher: onnx.ModelProto | None, batchable: bool,
                 threads: int = 0, per_batch: bool = False, features: dict[str, str] | None = None,
                 slices: dict[str, tuple[int, np.ndarray]] | None = None, keep_features: bool = False):
        """keep_features: the features' teacher values may be kept like the output's when small (they are
        other outputs of the model, not a layer's activations)."""
        self.batchable, self.kept, self.sess, self.data = batchable, None, None, data
        self.features = dict(features or {})  # teacher tensor -> the training graph's input for it
        self.slices = dict(slices or {})      # teacher tensor -> (axis, indices): a pruned layer's kept channels
        self.kept_features: dict[str, np.ndarray] = {}  # training input -> the kept teacher values
        self.chunk, self.lazy, self.per_batch = KEEP_CHUNK, False, False
        if tg.loss_kind != "cross_entropy" and teacher is not None:
            self.sess = session(with_outputs(teacher, list(self.features)) if self.features else teacher, threads)
            names = [o.name for o in self.sess.get_outputs()]
            self.name = tg.logits if tg.logits in names else names[0]
            feeds = feeds_of(data, np.arange(1), batchable)
            first = self.teach(feeds)
            nbytes = first.nbytes + sum(feeds[name].nbytes for name in self.features.values())
            self.per_batch = bool(per_batch or (self.features and not keep_features) or
                                  nbytes * len(data) // max(1, _batch_of(first, batchable)) > KEEP_TARGETS_BYTES)
            return
        if data.labels is None:
            need = "labels" if tg.loss_kind == "cross_entropy" else "a teacher model or float targets in 'labels'"
            raise BadInputError(f"the {tg.loss_kind} loss needs {need}")
        self.kept = np.asarray(data.labels).astype(np.int64 if tg.loss_kind == "cross_entropy" else np.float32)

    def teach(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The teacher's output, `chunk` samples per run; with features, their values are added to `feeds`
        under their input names."""
        n = len(next(iter(feeds.values()))) if feeds else 0
        if not self.batchable or n <= self.chunk:
            return self._teach(feeds)
        parts = [{k: v[i:i + self.chunk] for k, v in feeds.items()} for i in range(0, n, self.chunk)]
        outs = [self._teach(part) for part in parts]
        for name in self.features.values():
            feeds[name] = np.concatenate([part[name] for part in parts])
        return np.concatenate(outs)

    def _teach(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if not self.features:
            return self.sess.run([self.name], feeds)[0].astype(np.float32, copy=False)
        out = self.sess.run([self.name, *self.features], {k: v for k, v in feeds.items() if k not in self.inputs})
        for name, value in zip(self.features, out[1:]):
            if name in self.slices:  # the student's tensor holds the kept channels only
                axis, kept = self.slices[name]
                value = np.take(value, kept, axis=axis)
            feeds[self.features[name]] = np.ascontiguousarray(value)
        return out[0].astype(np.float32, copy=False)

    def first(self, n: int) -> np.ndarray:
        """The teacher's output on the first `n` samples, from this session (no second one)."""
        return self._all(self.data.take(min(n, len(self.data))), self.batchable)[0]

    @property
    def inputs(self) -> set[str]:
        return set(self.features.values())

    def _all(self, data: Dataset, batchable: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The teacher's output on every sample of `data`, and the features' values (by input name)."""
        step = self.chunk if batchable else 1
        chunks, extra = [], {name: [] for name in self.features.values()}
        for start in range(0, len(data), step):
            feeds = feeds_of(data, np.arange(start, min(len(data), start + step)), batchable)
            out = self.teach(feeds)
            chunks.append(out if batchable else out[None])
            for name, parts in extra.items():
                parts.append(feeds[name] if batchable else feeds[name][None])
        return np.concatenate(chunks), {name: np.concatenate(parts) for name, parts in extra.items()}

    def __call__(self, idx: np.ndarray, feeds: dict[str, np.ndarray]):
        if self.per_batch:
            if self.lazy and self.batchable:
                return Pending(self, len(idx))
            return np.ascontiguousarray(self.teach(feeds))
        if self.kept is None:  # first use: every target, then the teacher's session (and its arena) goes
            (self.kept, self.kept_features), self.sess = self._all(self.data, self.batchable), None
        pick = (lambda arr: arr[idx]) if self.batchable else (lambda arr: arr[idx[0]])
        for name, values in self.kept_features.items():  # the other outputs' targets, fed beside the output's
            feeds[name] = np.ascontiguousarray(pick(values))
        return np.ascontiguousarray(pick(self.kept))


class Pending:
    """A training batch's target not computed yet: the step resolves it on each micro-batch's feeds."""

    def __init__(self, targets: Targets, n: int):
        self.targets, self.n = targets, n

    def __len__(self) -> int:
        return self.n

    def resolve(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The teacher's output for `feeds` (features added to `feeds`, as Targets.teach does)."""
        return np.ascontiguousarray(self.targets.teach(feeds))

def _batch_of(out: np.ndarray, batchable: bool) -> int:
    return out.shape[0] if batchable and out.ndim else 1
