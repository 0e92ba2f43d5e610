"""ONNX Runtime sessions bound to the live weight buffers through IOBinding.

Weights and gradients are bound once as OrtValues over the FlatParams memory: ORT reads the
weights the optimizer just updated in place and writes gradients straight into the buffer the
optimizer reads, so nothing is copied per step except the batch itself and, for Convs on ORT's
NCHWc kernels, the numpy-reordered filters of the weights they read (autodiff.nchwc).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import BadInputError
from onnxprune.load.runtime import session
from onnxprune.autodiff.builder import TrainingGraph
from onnxprune.autodiff.nchwc import FedFilter, fill_filter, lower_convs_fed
from onnxprune.autodiff.optim import FlatParams
from onnxprune.autodiff.weights import weights_as_inputs

log = logging.getLogger("onnxprune")


def _bind_weights(io: ort.IOBinding, params: FlatParams) -> list[ort.OrtValue]:
    values = [ort.OrtValue.ortvalue_from_numpy(params.values[name]) for name in params.names]
    for name, value in zip(params.names, values):
        io.bind_ortvalue_input(name, value)
    return values


def _batch_of(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) else 0


def fast_session(model: onnx.ModelProto, threads: int, batch: int,
                 fed: tuple[str, ...] = ()) -> tuple[ort.InferenceSession, dict[str, FedFilter]]:
    """A session whose run-time-weight Convs use ORT's NCHWc kernels (see autodiff.nchwc), and the
    reordered filters of the `fed` weights it reads as inputs; the model as it is if ORT refuses the
    rewritten one (an ORT build without those kernels)."""
    try:
        lowered, derived = lower_convs_fed(model, batch, fed)
    except Exception as exc:  # noqa: BLE001 - an optimisation only: shape inference can fail on odd graphs
        log.debug("NCHWc rewrite skipped: %s", exc)
        lowered, derived = model, {}
    if lowered is not model:
        try:
            return session(lowered, threads), derived
        except BadInputError:
            pass
    return session(model, threads), {}


class TrainStep:
    """One forward/backward pass per call: loss and logits out, gradients into params.grad.

    The session is built at the first call, when the batch size is known (it decides which Convs
    run on NCHWc kernels; later batches of any size run on the same session)."""

    def __init__(self, tg: TrainingGraph, params: FlatParams, threads: int = 0):
        self.tg, self.params, self.threads = tg, params, threads
        self.sess = self.io = None

    def _start(self, batch: int) -> None:
        self.sess, self.filters = fast_session(self.tg.model, self.threads, batch, tuple(self.params.names))
        self.io = self.sess.io_binding()
        self._rebind()
        self._keep = _bind_weights(self.io, self.params)  # OrtValues must outlive the binding
        self._filter_buffers = {name: np.empty(spec.shape, np.float32) for name, spec in self.filters.items()}
        for name, buffer in self._filter_buffers.items():
            value = ort.OrtValue.ortvalue_from_numpy(buffer)
            self._keep.append(value)
            self.io.bind_ortvalue_input(name, value)
        for name in self.params.names:
            grad = ort.OrtValue.ortvalue_from_numpy(self.params.grads[name])
            self._keep.append(grad)
            self.io.bind_ortvalue_output(self.tg.grads[name], grad)

    def _rebind(self) -> None:
        # ORT keeps the logits it allocated in the binding; rebinding lets the batch size change
        self.io.bind_output(self.tg.loss)  # bound first: get_outputs() keeps binding order
        self.io.bind_output(self.tg.logits)

    def __call__(self, feeds: Mapping[str, np.ndarray], target: np.ndarray) -> tuple[float, np.ndarray]:
        if self.sess is None:
            self._start(_batch_of(feeds))
        for name, spec in self.filters.items():  # the weights as the optimizer left them, reordered
            fill_filter(spec, self.params.values[spec.weight], self._filter_buffers[name])
        for name, value in feeds.items():
            self.io.bind_cpu_input(name, value)
        self.io.bind_cpu_input(self.tg.target, target)
        self._rebind()
        self.sess.run_with_iobinding(self.io)
        loss, logits = self.io.get_outputs()[:2]
        return float(loss.numpy()), logits.numpy()


class Forward:
    """The inference model reading the same live weights (for validation during training). `output`: one
    name (calls return its array) or several (calls return a list of arrays, in that order)."""

    def __init__(self, model: onnx.ModelProto, params: FlatParams, output: str | list[str], threads: int = 0):
        self.sess = session(weights_as_inputs(model, params.names), threads)
        self.io = self.sess.io_binding()
        self.output = output
        self._inputs = {i.name for i in self.sess.get_inputs()}
        self._keep = _bind_weights(self.io, params)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray | list[np.ndarray]:
        for name, value in feeds.items():
            if name in self._inputs:  # feeds may carry the teacher's values of other outputs too
                self.io.bind_cpu_input(name, value)
        names = [self.output] if isinstance(self.output, str) else self.output
        for name in names:
            self.io.bind_output(name)
        self.sess.run_with_iobinding(self.io)
        values = [v.numpy() for v in self.io.get_outputs()[:len(names)]]
        return values[0] if isinstance(self.output, str) else values
