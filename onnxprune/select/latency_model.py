"""Measured latency per node and width: the cost model behind `--target-latency`.

MACs say little about time: a depthwise convolution, a pooling or an elementwise op costs time out of
proportion to its MACs, and a convolution's speed-up flattens as it narrows. So every node is timed
alone, in ONNX Runtime on the user's provider and thread count, at the widths a uniform pruning of
GRID shares gives it (the rewrite itself makes those shapes, so every op's width rules hold). A node's
time is then a curve over its *work fraction* (the kept share of its MACs; of its output for ops
without MACs), and any plan's latency is predicted as the sum of its nodes' times, in microseconds,
without building it.

Timings are cached on disk by node signature (op, attributes, input shapes and types, small constant
inputs), provider, thread count, ONNX Runtime version and CPU: a repeated block or a second model with
the same layers costs nothing to measure.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxprune import progress
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import Dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.tensors import bodies
from onnxprune.select.plan import CostModel, select_uniform

GRID = (0.0, 0.25, 0.5, 0.75)  # uniform shares removed at which every node is timed
SIGNATURE_VALUES = 64  # constant inputs up to this many elements are part of a node's signature (Reshape shapes)
MAC_FLOOR = 1e-4  # MACs share below which a group's removal counts as free of MACs
RUNS = 15  # timed runs per node; the fastest counts (robust to other jobs on the machine)


@dataclass
class NodeCurve:
    """A node's time (microseconds) against its work fraction, from the GRID measurements."""

    work: np.ndarray
    micros: np.ndarray

    def at(self, work: float) -> float:
        """Interpolated; below the narrowest width measured, the lowest segment's line extended (the
        node's fixed cost stays its intercept), never under proportional time. Held flat there, a
        cut deeper than the grid's deepest (a depthwise conv or an SE Mul at 0.17 of its work when
        the grid reached 0.25) was predicted to save nothing more: EfficientNet's latency plan read
        0.94 ms in such nodes that extend to 0.52 ms (docs/benchmarks.md, s13-lat)."""
        w0 = self.work[0]
        if work >= w0 or len(self.work) < 2 or w0 <= 0:
            return float(np.interp(work, self.work, self.micros))
        t0, w1, t1 = self.micros[0], self.work[1], self.micros[1]
        line = t0 - (w0 - work) * (t1 - t0) / (w1 - w0) if w1 > w0 else t0
        return float(max(line, t0 * max(work, 0.0) / w0))


class LatencyModel:
    """Predicted latency of any plan of `dep`: the sum of its nodes' measured curves."""

    def __init__(self, dep: Dependency, curves: dict[int, NodeCurve], costs: CostModel | None = None,
                 measured: int = 0):
        self.dep, self.curves = dep, curves
        self.measured = measured  # nodes timed while building (the others came from the cache)
        self.costs = costs or CostModel(dep)
        self.dense = self.predict(np.zeros(dep.num_channels, dtype=bool))

    def predict(self, removed: np.ndarray) -> float:
        work = self.costs.node_work(removed)
        return sum(curve.at(work.get(index, 1.0)) for index, curve in self.curves.items())

    def kept(self, removed: np.ndarray) -> float:
        """Predicted latency as a fraction of the dense model's."""
        return self.predict(removed) / self.dense if self.dense > 0 else 1.0

    def channel_costs(self, per_mac: bool = True) -> dict[int, float]:
        """Per prunable group: predicted time saved per channel removed (half of its free channels
        removed, the rest of the model dense); with `per_mac`, per MAC removed instead (as shares
        of the dense totals), so that a latency target keeps as many MACs as it can: layers whose
        time is out of proportion to their MACs go first. Allocation divides importance by this."""
        out = {}
        total_macs = max(self.costs.total_macs, 1)
        for grp in self.dep.groups:
            free = grp.channels[~grp.frozen]
            if len(free) < 2:
                continue
            removed = np.zeros(self.dep.num_channels, dtype=bool)
            removed[free[: len(free) // 2]] = True
            saved = max(self.dense - self.predict(removed), 0.0) / max(self.dense, 1e-9)
            if per_mac:  # a group that saves time but no MACs costs no capacity: its share is floored
                out[grp.id] = saved / max((total_macs - self.costs.macs_after(removed)) / total_macs, MAC_FLOOR)
            else:
                out[grp.id] = saved / (len(free) // 2)
        return out


def build_latency_model(dep: Dependency, threads: int = 1, cache: str | os.PathLike | None = None,
                        grid: tuple[float, ...] = GRID, show_progress: bool = False,
                        skip: set[int] = frozenset()) -> LatencyModel:
    """Time every node of `dep`'s model at each GRID width (cached) and fit its curve; the groups in
    `skip` (kept whole by every selection) stay whole at every width."""
    costs = CostModel(dep)
    table = TimingCache(cache, threads)
    points: dict[int, list[tuple[float, float]]] = {}
    zeros = np.zeros(dep.num_channels)
    steps = progress.bar(grid, "latency table", total=len(grid), unit="width") if show_progress else grid
    for share in steps:
        plan = select_uniform(dep, zeros, share, skip=skip)
        model = dep.graph.model if share == 0 else apply_plan(plan)
        graph = dep.graph if share == 0 else ModelGraph(model, dep.graph.input_shapes)
        work = costs.node_work(plan.removed)
        by_name = {node.name: node for node in graph.nodes}
        for node in dep.graph.nodes:
            pruned = by_name.get(node.name)
            micros = None if pruned is None else table.time(graph, pruned)
            if micros is not None:
                points.setdefault(node.index, []).append((work.get(node.index, 1.0), micros))
    table.save()
    curves = {}
    for index, measured in points.items():
        measured.sort()
        curves[index] = NodeCurve(np.array([w for w, _ in measured]), monotone(np.array([m for _, m in measured])))
    return LatencyModel(dep, curves, costs, table.measured)


def monotone(micros: np.ndarray) -> np.ndarray:
    """Times sorted by work fraction, made non-decreasing: other work on the machine only ever adds
    time, so a narrower width measured slower than a wider one is noise (each point is capped by
    every wider point's time)."""
    return np.minimum.accumulate(micros[::-1])[::-1]


class TimingCache:
    """Node signature -> fastest measured microseconds, in one JSON file per provider, threads,
    ONNX Runtime version and CPU under `cache` (None: measure, keep nothing)."""

    def __init__(self, cache: str | os.PathLike | None, threads: int):
        self.threads = threads
        machine = f"{platform.processor() or platform.machine()}-{os.cpu_count()}"
        name = f"cpu-ort{ort.__version__}-t{threads}-{hashlib.sha1(machine.encode()).hexdigest()[:8]}.json"
        self.path = Path(cache) / name if cache is not None else None
        self.entries: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged cache is re-measured, never trusted
                self.entries = {}
        self.measured = 0  # nodes timed in this run (the rest came from the cache)

    def time(self, graph: ModelGraph, node) -> float | None:
        key = signature(graph, node)
        if key is None:
            return None
        if key not in self.entries:
            model = single_node_model(graph, node)
            self.entries[key] = time_model(model, self.threads) if model is not None else -1.0
            self.measured += 1
        value = self.entries[key]
        return None if value < 0 else value

    def save(self) -> None:
        if self.path is not None and self.measured:
            save_cache(self.path, self.entries)


def save_cache(path: Path, entries: dict) -> None:
    """Atomically, like the model cache (a cache file is not one of the run's outputs, so it does
    not go through the output guard); a cache that cannot be written is only a lost speed-up."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, path)
    except OSError:
        pass


def signature(graph: ModelGraph, node) -> str | None:
    """What a node's time depends on; None for nodes that are not timed (subgraphs, unknown shapes,
    all-constant inputs that ORT folds away)."""
    if bodies(node.proto):
        return None
    inputs = [t for t in node.inputs if t]
    if not inputs or all(graph.is_const(t) for t in inputs):
        return None
    parts = [node.proto.domain, node.op]
    for t in node.inputs:
        shape = graph.shape(t) if t else ()
        if t and (shape is None or any(not isinstance(d, int) or d < 0 for d in shape)):
            return None
        dtype = str(graph.dtypes.get(t, "")) if t else ""
        value = graph.const(t) if t and graph.is_const(t) and int(np.prod(shape)) <= SIGNATURE_VALUES else None
        parts.append(f"{list(shape)}:{dtype}:{None if value is None else value.tolist()}")
    attrs = sorted((a.name, str(helper.get_attribute_value(a))) for a in node.proto.attribute)
    parts.append(repr(attrs))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def single_node_model(graph: ModelGraph, node) -> onnx.ModelProto | None:
    """`node` alone: its constant inputs as initializers (their values), the others as graph inputs."""
    inits, inputs = [], []
    for t in dict.fromkeys(t for t in node.inputs if t):
        if graph.is_const(t):
            inits.append(numpy_helper.from_array(np.asarray(graph.const(t)), t))
        else:
            dtype = graph.dtypes.get(t, onnx.TensorProto.FLOAT)  # ONNX element types
            inputs.append(helper.make_tensor_value_info(t, dtype, list(graph.shape(t))))
    outputs = [helper.make_tensor_value_info(t, graph.dtypes[t], list(graph.shape(t)))
               if t in graph.dtypes and graph.shape(t) is not None else helper.make_empty_tensor_value_info(t)
               for t in node.outputs if t]
    body = helper.make_graph([node.proto], "node", inputs, outputs, inits)
    model = helper.make_model(body, opset_imports=list(graph.model.opset_import), ir_version=graph.model.ir_version)
    return model


def time_model(model: onnx.ModelProto, threads: int) -> float:
    """Fastest of RUNS runs, in microseconds, on random inputs; -1 if ONNX Runtime cannot run it."""
    from onnxprune.load.runtime import session
    try:
        sess = session(model, threads)
        feed = {i.name: _random(i) for i in sess.get_inputs()}
        sess.run(None, feed)
    except Exception:  # noqa: BLE001  (an op ORT cannot run alone: the node is left out of the model)
        return -1.0
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best * 1e6


_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8,
          "tensor(int8)": np.int8}


def _random(arg) -> np.ndarray:
    dtype = _TYPES.get(arg.type, np.float32)
    shape = [d if isinstance(d, int) else 1 for d in arg.shape]
    if np.issubdtype(dtype, np.floating):
        return np.random.default_rng(0).standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype)  # indices and masks: zeros are always in range
