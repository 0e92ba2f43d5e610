"""A dense model's outputs recorded once and replayed in place of its session, so fidelity can be
measured with one model in ONNX Runtime at a time: for a large model the dense session is released
before the pruned one is built, and the two never hold their weights together."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from onnxprune.check.fidelity import _run, batch_within
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import batchable

REPLAY_SAMPLES = 64  # recorded outputs are kept in memory: only for a few samples


class Arg(NamedTuple):
    name: str
    shape: list
    type: str


class Recorded:
    """Quacks like the dense session for `compare`: same inputs and outputs, and `run` hands back
    the recorded outputs of each batch in turn (compare reads the batches in the same order)."""

    replayed = True  # compare must not probe it with an extra run

    def __init__(self, sess, data: Dataset, batch_size: int = 32):
        # plain copies of the metadata: ORT's NodeArg objects would keep the whole session alive
        self._inputs = [Arg(a.name, a.shape, a.type) for a in sess.get_inputs()]
        self._outputs = [Arg(a.name, a.shape, a.type) for a in sess.get_outputs()]
        self._batchable = batchable(sess)
        batch_size = batch_within(data, batch_size)  # as compare batches them
        self._batches = [_run(sess, feed, "dense") for feed in data.batches(batch_size, self._batchable)]
        self._next = 0

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def run(self, names, feed) -> list[np.ndarray]:
        outputs = self._batches[self._next % len(self._batches)]
        self._next += 1
        return outputs
