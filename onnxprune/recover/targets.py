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


def join(arr: np.ndarray, idx: np.ndarray, batchable: bool) -> np.ndarray:
    """Samples `idx` of a per-sample stack, joined on the model's batch axis."""
    if batchable:
        return np.ascontiguousarray(arr[idx].reshape((-1,) + arr.shape[2:]))
    return np.ascontiguousarray(arr[idx[0]])


def feeds_of(data: Dataset, idx: np.ndarray, batchable: bool) -> dict[str, np.ndarray]:
    return {k: join(v, idx, batchable) for k, v in data.inputs.items()}


def data_batchable(model: onnx.ModelProto, data: Dataset) -> bool:
    """Samples can be joined along axis 0 when every data input has a dynamic first axis."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits or inp.name not in data.inputs:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not dims or (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return False
    return True


class Targets:
    """targets(idx, feeds) -> the loss target for the batch of samples `idx` fed as `feeds`."""

    def __init__(self, tg: TrainingGraph, data: Dataset, teacher: onnx.ModelProto | None, batchable: bool,
                 threads: int = 0, per_batch: bool = False, features: dict[str, str] | None = None,
                 slices: dict[str, tuple[int, np.ndarray]] | None = None):
        self.batchable, self.kept, self.sess = batchable, None, None
        self.features = dict(features or {})  # teacher tensor -> the training graph's input for it
        self.slices = dict(slices or {})      # teacher tensor -> (axis, indices): a pruned layer's kept channels
        if tg.loss_kind != "cross_entropy" and teacher is not None:
            self.sess = session(with_outputs(teacher, list(self.features)) if self.features else teacher, threads)
            names = [o.name for o in self.sess.get_outputs()]
            self.name = tg.logits if tg.logits in names else names[0]
            first = self.teach(feeds_of(data, np.arange(1), batchable))
            if not per_batch and not self.features and first.nbytes * len(data) // max(1, _batch_of(first, batchable)) <= KEEP_TARGETS_BYTES:
                self.kept = self._all(data, batchable)
            return
        if data.labels is None:
            need = "labels" if tg.loss_kind == "cross_entropy" else "a teacher model or float targets in 'labels'"
            raise BadInputError(f"the {tg.loss_kind} loss needs {need}")
        self.kept = np.asarray(data.labels).astype(np.int64 if tg.loss_kind == "cross_entropy" else np.float32)

    def teach(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The teacher's output; with features, their values are added to `feeds` under their input names."""
        if not self.features:
            return self.sess.run([self.name], feeds)[0].astype(np.float32, copy=False)
        out = self.sess.run([self.name, *self.features], {k: v for k, v in feeds.items() if k not in self.inputs})
        for name, value in zip(self.features, out[1:]):
            if name in self.slices:  # the student's tensor holds the kept channels only
                axis, kept = self.slices[name]
                value = np.take(value, kept, axis=axis)
            feeds[self.features[name]] = np.ascontiguousarray(value)
        return out[0].astype(np.float32, copy=False)

    @property
    def inputs(self) -> set[str]:
        return set(self.features.values())

    def _all(self, data: Dataset, batchable: bool, step: int = 64) -> np.ndarray:
        step = step if batchable else 1
        chunks = []
        for start in range(0, len(data), step):
            out = self.teach(feeds_of(data, np.arange(start, min(len(data), start + step)), batchable))
            chunks.append(out if batchable else out[None])
        return np.concatenate(chunks)

    def __call__(self, idx: np.ndarray, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.kept is None:
            return np.ascontiguousarray(self.teach(feeds))
        return np.ascontiguousarray(self.kept[idx] if self.batchable else self.kept[idx[0]])


def _batch_of(out: np.ndarray, batchable: bool) -> int:
    return out.shape[0] if batchable and out.ndim else 1
