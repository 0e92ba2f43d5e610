"""Static cost (parameters, MACs, size) and measured ONNX Runtime latency.

Latency of several models is measured interleaved (A, B, A, B, ...) in one process, because this
kind of machine is shared and noisy; ratios are medians of per-round ratios, not ratios of medians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from .graph import ModelGraph


def count_params(g: ModelGraph) -> int:
    """Elements of floating-point tensor constants (initializers and Constant nodes; scalars excluded)."""
    return int(sum(v.size for v in g.constants.values() if np.issubdtype(v.dtype, np.floating) and v.ndim >= 1))


def _prod(shape) -> int:
    return int(np.prod(shape)) if shape is not None else 0


def _conv(g, node):
    return _prod(g.shape(node.outputs[0])) * _prod(g.shape(node.inputs[1])[1:])


def _conv_transpose(g, node):
    return _prod(g.shape(node.inputs[0])) * _prod(g.shape(node.inputs[1])[1:])


def _matmul(g, node):
    return _prod(g.shape(node.outputs[0])) * g.shape(node.inputs[0])[-1]


def _gemm(g, node):
    a = g.shape(node.inputs[0])
    k = a[0] if int(node.attrs.get("transA", 0)) else a[1]
    return _prod(g.shape(node.outputs[0])) * k


def _recurrent(gates: int):
    def macs(g, node):
        seq, batch, inp = g.shape(node.inputs[0])
        hidden = int(node.attrs["hidden_size"])
        directions = 2 if node.attrs.get("direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        return seq * batch * directions * gates * hidden * (inp + hidden)
    return macs


MAC_COUNTERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm,
                "LSTM": _recurrent(4), "GRU": _recurrent(3), "RNN": _recurrent(1)}


def count_macs(g: ModelGraph, per_node: bool = False):
    """Multiply-accumulates of the linear ops at the analysed input shapes (total, or per node)."""
    table = {}
    for node in g.nodes:
        fn = MAC_COUNTERS.get(node.op)
        if fn is None:
            continue
        try:
            table[node.name] = int(fn(g, node))
        except (TypeError, IndexError, KeyError, ValueError):
            table[node.name] = 0
    return table if per_node else int(sum(table.values()))


@dataclass
class Timing:
    p50_ms: float
    p90_ms: float
    samples: int


def measure_latency(sessions: list, feed: dict, rounds: int = 30, warmup: int = 3) -> tuple[list[Timing], list[float]]:
    """Interleaved latency of each session on `feed`; also the median per-round ratio to the first."""
    for _ in range(warmup):
        for s in sessions:
            s.run(None, feed)
    times = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, feed)
            times[r, i] = time.perf_counter() - start
    timings = [Timing(float(np.median(times[:, i]) * 1e3), float(np.percentile(times[:, i], 90) * 1e3), rounds)
               for i in range(len(sessions))]
    ratios = [float(np.median(times[:, i] / times[:, 0])) for i in range(len(sessions))]
    return timings, ratios


def model_size(model: onnx.ModelProto) -> int:
    return model.ByteSize()
