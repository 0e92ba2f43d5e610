"""Whether a model carries a recurrence: a recurrent op (LSTM, GRU, RNN, a Scan body), or one weight
matrix read by several Gemm/MatMul nodes, which is how an exporter unrolls a recurrent cell over its
time steps (captcha_crnn: each of its LSTM's two weights read by 20 Gemms).

The data-aware default reads it: on the recurrent models measured with 32 samples at half the MACs,
output-space fisher ranked channels worse than layer-wise reconstruction (docs/benchmarks.md,
"Fisher or reconstruction with few samples")."""

from __future__ import annotations

from collections import Counter

import onnx

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "Scan"})
MATRIX_OPS = frozenset({"Gemm", "MatMul"})


def _weights(graph: onnx.GraphProto) -> set[str]:
    """Names of constant tensors: initializers and Constant nodes' outputs."""
    return {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def has_recurrence(model: onnx.ModelProto) -> bool:
    """A recurrent op anywhere (subgraphs included), or a weight read as the matrix of two or more
    Gemm/MatMul nodes (an unrolled recurrence)."""
    return _graph_recurrent(model.graph)


def _graph_recurrent(graph: onnx.GraphProto) -> bool:
    weights = _weights(graph)
    reads: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in RECURRENT_OPS:
            return True
        if node.op_type in MATRIX_OPS and len(node.input) > 1 and node.input[1] in weights:
            reads[node.input[1]] += 1
        for attr in node.attribute:  # If/Loop bodies
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            if any(_graph_recurrent(g) for g in subs):
                return True
    return any(n >= 2 for n in reads.values())


__all__ = ["RECURRENT_OPS", "has_recurrence"]
