"""Every tensor a model holds: initializers and tensor attributes, in the main graph and every subgraph.
Its own module because both constant handling and external-data reading walk tensors."""

from __future__ import annotations

from typing import Iterator

import onnx


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant/attribute tensors of the main graph and every subgraph."""
    def graph_tensors(graph: onnx.GraphProto):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.GRAPH:
                    yield from graph_tensors(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        yield from graph_tensors(sub)
    yield from graph_tensors(model.graph)
