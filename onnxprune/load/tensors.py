"""Every graph and every tensor a model holds: initializers and tensor attributes, in the main graph and
every subgraph. Its own module because constant handling, external-data reading and training walk them."""

from __future__ import annotations

from typing import Iterator

import onnx


def bodies(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds (If branches, Loop/Scan bodies), in attribute order; [] for most ops."""
    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend(attr.graphs)
    return out


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every If/Loop/Scan body nested in it, outermost first."""
    yield graph
    for node in graph.node:
        for body in bodies(node):
            yield from all_graphs(body)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant/attribute tensors of the main graph and every subgraph."""
    for graph in all_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            yield from (attr.t for attr in node.attribute if attr.type == onnx.AttributeProto.TENSOR)
