"""Static cost of a graph at its analysed input shapes: parameters and multiply-accumulates.

Selection (the cost model behind --target-macs) and the benchmark both count with these.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import onnx

from onnxprune.graph.constants import sizes
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.tensors import bodies


def count_params(g: ModelGraph) -> int:
    """Elements of the weights: floating-point tensor constants (initializers and Constant nodes,
    scalars excluded), integer weights that a DequantizeLinear turns into floats (QDQ models), and the
    initializers of If/Loop/Scan bodies."""
    quantized = {n.inputs[0] for n in g.nodes if n.op == "DequantizeLinear"}
    total = sum(math.prod(shape) for name, shape, dtype in sizes(g.constants)
                if len(shape) >= 1 and (is_floating(dtype) or name in quantized))
    for node in g.nodes:
        total += sum(_body_params(body) for body in bodies(node.proto))
    return int(total)


@lru_cache(maxsize=None)
def is_floating(dtype: np.dtype) -> bool:
    """np.issubdtype(dtype, np.floating), asked once per element type (it costs 10 µs a call: a second
    on 100,000 constants)."""
    return bool(np.issubdtype(dtype, np.floating))


def _body_params(graph: onnx.GraphProto) -> int:
    count = sum(int(np.prod(t.dims)) for t in graph.initializer
                if len(t.dims) >= 1 and t.data_type in _FLOAT_TYPES)
    for node in graph.node:
        count += sum(_body_params(b) for b in bodies(node))
    return count


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _prod(shape) -> int:
    return math.prod(shape) if shape is not None else 0  # math.prod: np.prod costs 5 µs a call on 100,000 nodes


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


def _fused_attention(g, node):
    """com.microsoft Attention: the packed QKV projection, then scores and weighted values over the
    sequence (as the unfused graph's two MatMuls would count them)."""
    batch, seq, width = g.shape(node.inputs[0])
    columns = g.shape(node.inputs[1])[1]
    value_width = g.shape(node.outputs[0])[-1]
    return batch * seq * width * columns + batch * seq * seq * (columns - value_width)


def _matmul_nbits(g, node):
    return _prod(g.shape(node.outputs[0])) * int(node.attrs["K"])


MAC_COUNTERS = {"Conv": _conv, "ConvTranspose": _conv_transpose, "MatMul": _matmul, "Gemm": _gemm,
                "LSTM": _recurrent(4), "GRU": _recurrent(3), "RNN": _recurrent(1),
                "com.microsoft.Attention": _fused_attention, "com.microsoft.MatMulNBits": _matmul_nbits}


def count_macs(g: ModelGraph, per_node: bool = False):
    """Multiply-accumulates of the linear ops at the analysed input shapes (total, or per node)."""
    table = {}
    for node in g.nodes:
        domain = node.proto.domain
        fn = MAC_COUNTERS.get(node.op if domain in ("", "ai.onnx") else f"{domain}.{node.op}")
        if fn is None:
            continue
        try:
            table[node.name] = int(fn(g, node))
        except (TypeError, IndexError, KeyError, ValueError):
            table[node.name] = 0
    return table if per_node else int(sum(table.values()))


def layer_macs(g: ModelGraph) -> list[dict]:
    """MACs of each linear node, in graph order: [{"node", "op", "macs"}]."""
    table = count_macs(g, per_node=True)
    return [{"node": n.name, "op": n.op, "macs": table[n.name]} for n in g.nodes if n.name in table]
