"""Bounded-memory passes: split the tensors a statistics pass must expose into chunks that fit a budget.

Exposing every needed intermediate tensor in one ONNX Runtime run keeps them all alive at once (a
640x640 detector needs tens of GB at batch 32). Instead the tensors are packed, in graph order, into
chunks whose exposed bytes times the batch size stay under `budget`; each chunk is one streaming pass
over the samples. Peak memory is then about the model, one batch of the model's own activations and
one chunk; time is (passes x samples) forward runs, each pass computing only what its chunk needs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx

DEFAULT_BUDGET = 512 * 2 ** 20   # bytes of exposed activations (float64 copies included) per run
UNKNOWN_BYTES = 4 * 2 ** 20      # a tensor whose shape is unknown is assumed this big per sample
STATS_COPIES = 3                 # statistics read a float64 copy (2x) of the float32 output (1x)


def tensor_bytes(shapes: Mapping[str, Sequence[int] | None], tensors: Sequence[str], itemsize: int = 4) -> dict[str, int]:
    """Bytes per sample of each tensor (shapes as given for one sample)."""
    out = {}
    for t in tensors:
        shape = shapes.get(t)
        out[t] = int(np.prod(shape)) * itemsize if shape else UNKNOWN_BYTES
    return out


def plan_passes(tensors: Sequence[str], bytes_per_sample: Mapping[str, int], batch_size: int,
                budget: int = DEFAULT_BUDGET) -> tuple[int, list[list[str]]]:
    """(batch size, chunks of `tensors`) so that one chunk of one batch stays under `budget`."""
    if not tensors:
        return batch_size, []
    biggest = max(bytes_per_sample.get(t, UNKNOWN_BYTES) for t in tensors) * STATS_COPIES
    batch = int(max(1, min(batch_size, budget // max(biggest, 1))))
    chunks: list[list[str]] = [[]]
    used = 0
    for t in tensors:
        cost = bytes_per_sample.get(t, UNKNOWN_BYTES) * batch  # exposed float32 outputs of one run
        if chunks[-1] and used + cost > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(t)
        used += cost
    return batch, chunks


def _reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor a node reads, including those its subgraphs (If/Loop bodies) read from outside."""
    names = {t for t in node.input if t}
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in graphs:
            for inner in body.node:
                names |= _reads(inner)
    return names


def prefix_model(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """`model` cut down to the nodes the given tensors depend on, with exactly those tensors as outputs.

    ONNX Runtime runs every node of a graph whatever the fetches ask for, so a pass that needs early
    tensors only pays for the prefix that computes them.
    """
    needed = set(tensors)
    keep = []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            keep.append(node)
            needed |= _reads(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.node[:]
    graph.node.extend(reversed(keep))
    del graph.output[:]
    for t in dict.fromkeys(tensors):
        graph.output.add().name = t
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.value_info[:]
    return out
