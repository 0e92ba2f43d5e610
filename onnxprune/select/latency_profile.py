"""Per-node latency measured in context: ONNX Runtime's profiler on the whole model at each width.

Timing a node alone misses what ONNX Runtime does to the whole graph: fused Conv+activation and
Conv+Add kernels, the NCHWc layout and the reorders between layouts, the time of ops a pruned
channel never reaches. Here the dense model and its uniform prunings at GRID shares are run with
`enable_profiling`, their runs interleaved (one run of each width in turn, so that other work on a
shared machine slows every width alike); every kernel ORT ran is charged back to the original node
it came from (fused and NCHWc nodes are named after an original node or tensor; a reorder after the tensor it
converts), and each node's curve over its work fraction is fitted from those in-context times. A
kernel that cannot be traced back is a fixed cost. Times are cached on disk by model, width
rounding, thread count, ONNX Runtime version and CPU, like the isolated table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune import progress
from onnxprune.apply.as_run import Build
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import Dependency
from onnxprune.load.data import index_limits, synthetic_dataset
from onnxprune.load.spill import needs_spill, spilled
from onnxprune.select.latency_model import GRID, LatencyModel, NodeCurve, monotone, save_cache
from onnxprune.select.plan import CostModel, select_uniform

log = logging.getLogger("onnxprune")

RUNS = 12  # profiled runs per width; per kernel the fastest counts (other jobs only ever add time)
WARMUP = 3
REST = -1  # curve index of the kernels no original node owns (a fixed cost)
FUSED_INTO = ("Conv", "Gemm", "MatMul")  # kernel op types that absorb the activations/Adds after them
FUSION_DEPTH = 3  # Conv -> BatchNormalization -> Add -> Relu
TOKEN = re.compile(r"_token_\d+$")  # ORT's suffix on a kernel that replaced a QDQ node group
NCHWC = "_nchwc"  # suffix ORT gives an NCHWc node: the original output tensor's name + this
INTERLEAVE_BYTES = 256 << 20  # weights up to this size: every width profiled at once, runs interleaved
BUSY = 1.0  # load average per core above which the machine counts as busy
LAYOUT = "interleaved-load"  # in the cache file name: older profiles (one width after another, no load) are not reused


def build_profiled_model(dep: Dependency, threads: int = 1, cache: str | os.PathLike | None = None,
                         grid: tuple[float, ...] = GRID, round_to: int = 1, show_progress: bool = False,
                         build: Build = apply_plan, dense: onnx.ModelProto | None = None,
                         skip: set[int] = frozenset()) -> LatencyModel:
    """Profile `dep`'s model at each GRID uniform width (cached) and fit every node's curve. `build`
    (plan -> model) and `dense` give the model as it will run when that is not the analysed one (a
    QDQ model's lifted weights lowered back to integers: apply/as_run.py); kernels are charged to the
    analysed nodes by name. The groups in `skip` (kept whole by every selection) stay whole at every width."""
    costs = CostModel(dep)
    dense = dep.graph.model if dense is None else dense
    plans = {share: select_uniform(dep, np.zeros(dep.num_channels), share, round_to, skip=skip) for share in grid}
    store = ProfileCache(cache, threads, dense, round_to, skip, plans)
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    index = {node.name: node.index for node in dep.graph.nodes}
    weighted = {dep.graph.nodes[i].name for i in costs.term_nodes}
    missing = [share for share in grid if store.get(share) is None]
    together = _weight_bytes(dep.graph.model) <= INTERLEAVE_BYTES  # else one width at a time (memory)
    if missing and store.load > BUSY:
        log.warning("profiling latency under a load of %.1f per core: long kernels will look slower than they "
                    "are; the profile is re-measured when a later run finds the machine quiet", store.load)
    batches = [missing] if together and missing else [[share] for share in missing]
    steps = progress.bar(batches, "latency profile", total=len(batches), unit="batch") if show_progress else batches
    for batch in steps:
        models = [dense if share == 0 else build(plans[share]) for share in batch]
        for share, times in zip(batch, profile_interleaved(models, threads, dep.graph.input_shapes, weighted)):
            store.put(share, times)
    for share in grid:
        times, work = store.get(share), costs.node_work(plans[share].removed)
        for name, micros in times.items():
            node = index.get(name)
            points[REST if node is None else node].append((1.0 if node is None else work.get(node, 1.0), micros))
    store.save()
    curves = {}
    for node, measured in points.items():
        if node == REST:  # one fixed cost: the mean over widths
            curves[node] = NodeCurve(np.array([1.0]), np.array([float(np.mean([m for _, m in measured]))]))
            continue
        measured.sort()
        curves[node] = NodeCurve(np.array([w for w, _ in measured]), monotone(np.array([m for _, m in measured])))
    return LatencyModel(dep, curves, costs, store.measured)


def profile_nodes(model: onnx.ModelProto, threads: int, input_shapes: dict | None = None,
                  weighted: set[str] | None = None, runs: int = RUNS) -> dict[str, float]:
    """Microseconds per original node name (the fastest of `runs` per kernel, kernels charged to
    the node they came from); kernels no node owns are summed under ''."""
    return profile_interleaved([model], threads, input_shapes, weighted, runs)[0]


def profile_interleaved(models: list[onnx.ModelProto], threads: int, input_shapes: dict | None = None,
                        weighted: set[str] | None = None, runs: int = RUNS) -> list[dict[str, float]]:
    """`profile_nodes` of several models (the widths of one model) with their runs interleaved, one
    run of each in turn: a burst of other work on a shared machine then slows every width alike
    instead of all the runs of one width, so each curve's shape (time at a width against dense)
    survives the load; one width profiled after another had its whole window in or out of a burst."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-profile-") as folder:
        profiled = [_Profiled(model, threads, input_shapes, os.path.join(folder, str(i))) for i, model in enumerate(models)]
        for _ in range(WARMUP + runs):
            for one in profiled:
                one.run()
        return [one.node_times(model.graph, weighted) for one, model in zip(profiled, models)]


class _Profiled:
    """One ONNX Runtime session with its profiler on, and the optimized graph it ran."""

    def __init__(self, model: onnx.ModelProto, threads: int, input_shapes: dict | None, folder: str):
        os.makedirs(folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1  # 0: ORT's default
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        opts.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(folder, "profile")
        if needs_spill(model):  # weights read from files (absolute locations, which ORT refuses) or large
            with spilled(model) as path:
                self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        else:
            self.sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.optimized = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
        self.sess.index_limits = index_limits(model)  # token types index a 2-row table: synthetic ids stay in it
        self.feed = next(synthetic_dataset(self.sess, input_shapes or {}, samples=1).batches(1))

    def run(self) -> None:
        self.sess.run(None, self.feed)

    def node_times(self, original: onnx.GraphProto, weighted: set[str] | None) -> dict[str, float]:
        events = json.loads(Path(self.sess.end_profiling()).read_text())
        fastest: dict[str, float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                name = e["name"][: -len("_kernel_time")]
                fastest[name] = min(fastest.get(name, float("inf")), float(e["dur"]))
        owners = kernel_owners(original, self.optimized, weighted)
        out: dict[str, float] = defaultdict(float)
        for kernel, micros in fastest.items():
            out[owners.get(kernel, "")] += micros
        return dict(out)


def kernel_owners(original: onnx.GraphProto, optimized: onnx.GraphProto, weighted: set[str] | None = None) -> dict[str, str]:
    """Optimized node name -> the original node it came from (absent: none found). In order: the
    same name; an NCHWc node's name (original output tensor + '_nchwc'); a fused node's name
    (the original node's name + '/FusionName/'); an original tensor it writes, then one it reads
    (reorders convert original tensors); else the owner of the kernel that feeds it. A fused
    Conv/Gemm kernel named after the activation or Add it absorbed is charged to the `weighted`
    (MAC-bearing) node that activation follows, so input-channel pruning shows in its curve."""
    names = {n.name for n in original.node if n.name}
    producer = {t: n.name for n in original.node for t in n.output if t}
    inputs = {n.name: [t for t in n.input if t in producer] for n in original.node}
    made_by: dict[str, str] = {}
    owners: dict[str, str] = {}
    for node in optimized.node:  # topological: a kernel's producers are resolved before it
        owner = _owner(node, names, producer, made_by)
        if owner and weighted and owner not in weighted and any(k in node.op_type for k in FUSED_INTO):
            owner = _weighted_before(owner, inputs, producer, weighted) or owner
        if owner:
            owners[node.name] = owner
            for t in node.output:
                made_by[t] = owner
    return owners


def _weighted_before(name: str, inputs: dict, producer: dict, weighted: set[str]) -> str | None:
    """The weighted node a fused chain (Conv -> BatchNormalization -> Add -> Relu ...) starts from:
    walked back through first inputs, at most FUSION_DEPTH nodes."""
    for _ in range(FUSION_DEPTH):
        if not inputs.get(name):
            return None
        name = producer[inputs[name][0]]
        if name in weighted:
            return name
    return None


def _owner(node, names: set, producer: dict, made_by: dict) -> str | None:
    if node.name in names:
        return node.name
    untokened = TOKEN.sub("", node.name)  # a QDQ group fused into one kernel (QLinearConv, NhwcMaxPool)
    if untokened in names:
        return untokened
    if node.name.endswith(NCHWC) and node.name[: -len(NCHWC)] in producer:
        return producer[node.name[: -len(NCHWC)]]
    parts = node.name.rstrip("/").split("/")
    for cut in range(len(parts) - 1, 0, -1):
        if "/".join(parts[:cut]) in names:
            return "/".join(parts[:cut])
    for tensors in (node.output, node.input):
        for t in tensors:
            if t in producer:
                return producer[t]
    return next((made_by[t] for t in node.input if t in made_by), None)


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def machine_load() -> float:
    """The 1-minute load average per core (0 where the OS does not report it)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return 0.0


class ProfileCache:
    """(model, width share) -> node times and the load per core they were taken under, one JSON file
    per thread count, ORT version and CPU. A profile taken on a busy machine (load per core above
    BUSY) is re-measured once the machine is quiet: under load the profiler's wall-clock kernel
    times overstate long kernels (preempted mid-run) against short ones, which skews the curves."""

    def __init__(self, cache: str | os.PathLike | None, threads: int, model: onnx.ModelProto, round_to: int,
                 skip: set[int] = frozenset(), plans: dict | None = None):
        machine = f"{platform.processor() or platform.machine()}-{os.cpu_count()}"
        name = f"profile-{LAYOUT}-cpu-ort{ort.__version__}-t{threads}-{hashlib.sha1(machine.encode()).hexdigest()[:8]}.json"
        self.path = Path(cache) / name if cache is not None else None
        self.model_key = hashlib.sha1(model.SerializeToString()).hexdigest()[:16] + f"-r{round_to}"
        if skip:  # other uniform plans than those of the same model without skipped groups
            self.model_key += "-s" + hashlib.sha1(repr(sorted(skip)).encode()).hexdigest()[:8]
        if plans:  # the widths profiled: a change in how uniform plans round (width_step.py) is another profile
            masks = b"".join(np.packbits(plans[share].removed).tobytes() for share in sorted(plans))
            self.model_key += "-p" + hashlib.sha1(masks).hexdigest()[:8]
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):  # a damaged cache is re-measured, never trusted
                self.entries = {}
        self.measured = 0
        self.load = machine_load()

    def get(self, share: float) -> dict[str, float] | None:
        entry = self.entries.get(f"{self.model_key}-{share:g}")
        if not isinstance(entry, dict) or not isinstance(entry.get("times"), dict):
            return None
        if entry.get("load", 0.0) > BUSY and self.load <= BUSY:  # taken under load, now quiet: again
            return None
        return entry["times"]

    def put(self, share: float, times: dict[str, float]) -> dict[str, float]:
        self.entries[f"{self.model_key}-{share:g}"] = {"times": times, "load": round(self.load, 2)}
        self.measured += 1
        return times

    def save(self) -> None:
        if self.path is not None and self.measured:
            save_cache(self.path, self.entries)
