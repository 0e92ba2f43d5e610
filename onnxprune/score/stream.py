"""Run a model one segment at a time over the calibration samples, each node once per sample.

Exposing many intermediate tensors in one ONNX Runtime run keeps them all alive at once, and running
the prefix of the model up to each group of tensors re-runs the early layers once per group (time
quadratic in depth). Here the caller cuts the graph into segments (a list of node indices each, in
order); segment k is its own small model whose inputs are the graph inputs it reads and the tensors
earlier segments computed for it (the *frontier*), kept per batch in an `ActivationStore` (memory up to
a budget, then temporary files read back with plain file I/O, so they never count toward the RSS).

Constant-only nodes (Constant, shape arithmetic on weights) are copied into every segment that reads
them instead of passing through the store. `replace` swaps constant values (re-solved weights) into a
segment without rebuilding the whole model.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.load.tensors import bodies
from onnxprune.load.workdirs import PrivateDir

STORE_BUDGET = 64 * 2 ** 20   # bytes of frontier tensors held in memory before spilling to disk


class ActivationStore:
    """Per-batch tensors keyed by (name, batch): in memory up to `budget` bytes, then in files."""

    def __init__(self, budget: int = STORE_BUDGET):
        self.budget, self.used = budget, 0
        self._memory: dict[tuple[str, int], np.ndarray] = {}
        self._files: dict[tuple[str, int], str] = {}
        self._folder: PrivateDir | None = None
        self._written = 0  # file names never repeat, whatever was dropped

    def put(self, name: str, batch: int, value: np.ndarray) -> None:
        value = np.asarray(value)
        if self.used + value.nbytes <= self.budget:
            self._memory[(name, batch)] = value
            self.used += value.nbytes
            return
        if self._folder is None:
            self._folder = PrivateDir("acts")
        path = os.path.join(self._folder.name, f"{self._written}.npy")
        self._written += 1
        np.save(path, value, allow_pickle=False)
        self._files[(name, batch)] = path

    def get(self, name: str, batch: int) -> np.ndarray:
        if (name, batch) in self._memory:
            return self._memory[(name, batch)]
        return np.load(self._files[(name, batch)], allow_pickle=False)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._memory or key in self._files

    def drop(self, names: set[str]) -> None:
        for key in [k for k in self._memory if k[0] in names]:
            self.used -= self._memory.pop(key).nbytes
        for key in [k for k in self._files if k[0] in names]:
            os.remove(self._files.pop(key))

    def close(self) -> None:
        self._memory.clear()
        self._files.clear()
        self.used = 0
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor a node reads, including those its subgraphs (If/Loop bodies) read from outside;
    not the tensors a body makes for itself (a branch's own Constant is no input of the segment)."""
    names = {t for t in node.input if t}
    for body in bodies(node):
        local = {i.name for i in body.input} | {i.name for i in body.initializer}
        local |= {t for inner in body.node for t in inner.output}
        for inner in body.node:
            names |= reads(inner) - local
    return names


def static_tensors(model: onnx.ModelProto) -> set[str]:
    """Initializers and the outputs of nodes that read only those (computable without any sample)."""
    static = {i.name for i in model.graph.initializer}
    fed = {i.name for i in model.graph.input} - static
    for node in model.graph.node:
        needs = reads(node)
        if not needs.intersection(fed) and needs <= static and node.op_type not in _RANDOM:
            static.update(t for t in node.output if t)
    return static


_RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def needed_nodes(model: onnx.ModelProto, tensors: Sequence[str]) -> list[int]:
    """Indices (in graph order) of the nodes the given tensors depend on."""
    needed, keep = set(tensors), []
    nodes = model.graph.node
    for i in range(len(nodes) - 1, -1, -1):
        if needed.intersection(nodes[i].output):
            keep.append(i)
            needed |= reads(nodes[i])
    return keep[::-1]


def batchable_inputs(model: onnx.ModelProto) -> bool:
    """Whether every fed graph input has a dynamic first axis (samples can be joined into batches)."""
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if not inp.type.tensor_type.HasField("shape") or not dims or dims[0].dim_value > 0:
            return False  # paddle2onnx writes -1 for a dynamic axis: ONNX Runtime batches it
    return True


class Streamer:
    """Segments of one model run in order over the batches of `data`; see the module doc.

    `segments[k]` lists node indices of `model`; `fetches[k]` the tensors the caller wants while segment
    k runs (computed by it or earlier, or graph inputs). Nodes of no segment are never run."""

    def __init__(self, model: onnx.ModelProto, segments: Sequence[Sequence[int]], fetches: Sequence[Sequence[str]],
                 data: Dataset, batch_size: int, store: ActivationStore | None = None):
        self.model, self.data = model, data
        self.batch_size = batch_size if batchable_inputs(model) else 1
        self.store = store or ActivationStore()
        self.static = static_tensors(model)
        nodes = model.graph.node  # constant-only nodes go into each segment that reads them (segment_model)
        self.segments = [[i for i in seg if not all(t in self.static for t in nodes[i].output if t)]
                         for seg in segments]
        self.fed = {i.name: i for i in model.graph.input if i.name not in self.static}
        self.last_read: dict[str, int] = {}
        for k, seg in enumerate(self.segments):
            for i in seg:
                for t in reads(nodes[i]):
                    self.last_read[t] = k
        self.fetches = [list(f) for f in fetches]
        for k, fetch in enumerate(self.fetches):
            for t in fetch:
                self.last_read[t] = max(self.last_read.get(t, -1), k)
        self.next = 0

    def close(self) -> None:
        self.store.close()

    def run(self, replace: Mapping[str, np.ndarray] | None = None
            ) -> Iterator[tuple[int, float, dict[str, np.ndarray]]]:
        """Run the next segment over every batch; yield (batch index, the batch's share of the samples,
        its fetched values). `replace` (constant name -> value) changes the constants it reads."""
        k, self.next = self.next, self.next + 1
        fetch = self.fetches[k] if k < len(self.fetches) else []
        self.store.drop({t for t, last in self.last_read.items() if last < k})  # no later segment reads them
        nodes = [self.model.graph.node[i] for i in self.segments[k]] if k < len(self.segments) else []
        produced = {t for n in nodes for t in n.output if t}
        keep = sorted(t for t in produced if self.last_read.get(t, -1) > k)
        constant = [t for t in fetch if t in self.static and t not in produced]  # e.g. a QDQ bias, dequantized
        outputs = list(dict.fromkeys([t for t in fetch if t in produced] + constant + keep))
        feeds = sorted({t for n in nodes for t in reads(n)} - produced - self.static)
        sess = None
        reads_inputs = any(t in self.fed for t in [*feeds, *fetch])  # else no sample is read (lazy data)
        spans = self.data.spans(self.batch_size, self.batch_size > 1)
        for b, (start, stop) in enumerate(spans):
            feed = self.data.batch(start, stop) if reads_inputs else {}
            have = {t: (feed[t] if t in self.fed else self.store.get(t, b)) for t in feeds}
            values = {}
            if outputs:
                sess = sess or session(segment_model(self.model, nodes, have, outputs, self.fed, replace or {}),
                                       arena=False)  # one per segment: no arena outliving its runs
                values = dict(zip(outputs, sess.run(outputs, have)))
            for t in keep:
                self.store.put(t, b, values[t])
            got = {t: values[t] if t in values else (feed[t] if t in self.fed else self.store.get(t, b))
                   for t in fetch}
            yield b, self.data.batch_rows(start, stop) / len(self.data) if self.batch_size > 1 else 1 / len(self.data), got


def segment_model(model: onnx.ModelProto, nodes: list[onnx.NodeProto], have: Mapping[str, np.ndarray],
                  outputs: list[str], fed: Mapping[str, onnx.ValueInfoProto],
                  replace: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A model of `nodes` (plus the constant-only nodes they need) reading `have` and computing `outputs`."""
    mine = {t for n in nodes for t in n.output}
    needed = set().union(*(reads(n) for n in nodes)) if nodes else set()
    needed |= {t for t in outputs if t not in mine and t not in have}  # constants asked for as they are
    static_nodes = []
    for node in reversed(model.graph.node):  # constant-only producers of what the segment reads
        if needed.intersection(node.output) and not mine.intersection(node.output) and \
                not any(t in have for t in node.output):
            static_nodes.append(node)
            needed |= reads(node)
    graph = onnx.GraphProto(name="segment")
    for node in reversed(static_nodes):
        copy = graph.node.add()
        copy.CopyFrom(node)
        if node.op_type == "Constant" and node.output[0] in replace:
            for attr in copy.attribute:
                if attr.name == "value":
                    attr.t.CopyFrom(numpy_helper.from_array(replace[node.output[0]], node.output[0]))
    graph.node.extend(nodes)
    for init in model.graph.initializer:
        if init.name in needed and init.name not in have:
            if init.name in replace:
                graph.initializer.append(numpy_helper.from_array(replace[init.name], init.name))
            else:
                graph.initializer.append(init)
    for t, value in have.items():
        if t in fed:
            graph.input.append(fed[t])
            continue
        elem = helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
        graph.input.append(helper.make_tensor_value_info(t, elem, [f"d{i}" for i in range(np.ndim(value))]))
    for t in outputs:
        graph.output.add().name = t
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.functions.extend(model.functions)
    return out


def level_segments(model: onnx.ModelProto, marked: set[str], fetch: set[str], count: int) -> list[list[int]]:
    """`count` segments of the nodes of `model` needed for `fetch`, by level: the most marked nodes (by
    first output) on any path from the inputs, a marked node's output one level above its inputs.
    Segment k computes every tensor that depends only on marked nodes of levels below k."""
    level: dict[str, int] = {}
    segments: list[list[int]] = [[] for _ in range(count)]
    for i in needed_nodes(model, sorted(fetch)):
        node = model.graph.node[i]
        depth = max((level.get(t, 0) for t in reads(node)), default=0) + (node.output[0] in marked)
        for t in node.output:
            level[t] = depth
        segments[min(depth, count - 1)].append(i)
    return segments
