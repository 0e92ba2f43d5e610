"""Every graph and every tensor a model holds: initializers and tensor attributes, in the main graph and
every subgraph. Its own module because constant handling, external-data reading and training walk them."""

from __future__ import annotations

from typing import Iterator

import onnx


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every If/Loop/Scan body nested in it, outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from all_graphs(sub)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant/attribute tensors of the main graph and every subgraph."""
    for graph in all_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            yield from (attr.t for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR)
