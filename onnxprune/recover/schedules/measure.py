"""What `compare` measures on each trained model: accuracy, sparsity, size, speed and energy.

Speed is measured interleaved across all models in one process (A, B, C, A, B, C, ...), blocks of
runs timed by wall clock and by process CPU time, medians reported. Energy comes from RAPL
counters where they are readable; otherwise it is estimated, and labelled so, in two ways:

- measured: median CPU seconds per inference x WATTS_PER_CORE. This is what the run costs on this
  CPU with ONNX Runtime's dense kernels, so unstructured zeros save nothing here.
- ideal: nonzero MACs x PJ_PER_MAC, the arithmetic energy a sparsity-exploiting accelerator could
  approach (memory traffic excluded), for comparison with the seed study's claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.graph.cost import count_macs
from onnxprune.load.data import Dataset
from onnxprune.check.energy import measure_energy, rapl_zones
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import run_dataset, session
from onnxprune.apply.sparsity import zipped_size
from onnxprune.recover.schedules.layers import find_layers

# Estimate constants, stated in every report that uses them.
WATTS_PER_CORE = 4.0   # a busy core's share of a server CPU's TDP (e.g. a 64-core EPYC at 225-280 W: 3.5-4.4 W)
PJ_PER_MAC = 4.6       # fp32 multiply (3.7 pJ) + add (0.9 pJ) at 45 nm, Horowitz, ISSCC 2014


@dataclass
class Timing:
    latency_ms: float      # median wall time per inference
    cpu_ms: float          # median process CPU time per inference (all ORT threads)
    ratio: float           # median per-round latency ratio to the first model


def accuracy(model: onnx.ModelProto, data: Dataset, threads: int = 0) -> float | None:
    """Top-1 accuracy on integer labels (None without labels)."""
    if data.labels is None or not np.issubdtype(np.asarray(data.labels).dtype, np.integer):
        return None
    logits = run_dataset(session(model, threads), data, batch_size=256)[0]
    return float((logits.argmax(-1).reshape(-1) == np.asarray(data.labels).reshape(-1)).mean())


def _float_tensors(model: onnx.ModelProto):
    for init in model.graph.initializer:
        yield numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    yield numpy_helper.to_array(attr.t)


def static_stats(model: onnx.ModelProto, dense_sizes: Mapping[str, int], input_shapes) -> dict:
    """Nonzero and total parameters, sparsity per layer kind (against the dense model's layer sizes, so
    removed channels count as zeros), MACs of the dense kernels and of the nonzero weights, sizes."""
    params = [v for v in _float_tensors(model) if np.issubdtype(v.dtype, np.floating) and v.ndim >= 1]
    g = ModelGraph(model, input_shapes)
    layers = find_layers(model, g)
    nonzero_by_kind: dict[str, int] = {}
    density = {}
    for layer in layers:
        nz = int(np.count_nonzero(g.const(layer.name)))
        nonzero_by_kind[layer.kind] = nonzero_by_kind.get(layer.kind, 0) + nz
        density[layer.name] = nz / layer.size
    per_node = count_macs(g, per_node=True)
    nonzero_macs = 0.0
    for node in g.nodes:
        if node.name in per_node:
            weight = node.input(1)
            nonzero_macs += per_node[node.name] * density.get(weight, 1.0)
    raw = model.SerializeToString()
    return {"params": int(sum(v.size for v in params)), "params_nonzero": int(sum(np.count_nonzero(v) for v in params)),
            "sparsity": {kind: round(1.0 - nonzero_by_kind.get(kind, 0) / total, 4)
                         for kind, total in dense_sizes.items()},
            "macs": int(sum(per_node.values())), "macs_nonzero": int(round(nonzero_macs)),
            "size_bytes": len(raw), "zip_bytes": zipped_size(raw)}


def measure_speed(models: list[onnx.ModelProto], feed: dict, rounds: int = 30, repeat: int = 20,
                  threads: int = 0, bar=None) -> list[Timing]:
    """Interleaved blocks of `repeat` runs per model per round; medians of per-inference times."""
    sessions = [session(m, threads) for m in models]
    for s in sessions:  # warm-up
        for _ in range(3):
            s.run(None, feed)
    wall = np.zeros((rounds, len(sessions)))
    cpu = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i, s in enumerate(sessions):
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(repeat):
                s.run(None, feed)
            wall[r, i] = (time.perf_counter() - w0) / repeat
            cpu[r, i] = (time.process_time() - c0) / repeat
        if bar is not None:
            bar.update(1)
    return [Timing(float(np.median(wall[:, i]) * 1e3), float(np.median(cpu[:, i]) * 1e3),
                   float(np.median(wall[:, i] / wall[:, 0]))) for i in range(len(sessions))]


def energy_method() -> dict:
    """How energy will be obtained on this machine: RAPL, or the stated estimate and why."""
    zones, why = rapl_zones()
    if zones:
        return {"kind": "rapl", "note": "RAPL package energy, all processes on the package, median of interleaved "
                                        "rounds divided by runs"}
    return {"kind": "estimate", "reason": why, "watts_per_core": WATTS_PER_CORE, "pj_per_mac": PJ_PER_MAC,
            "note": f"ESTIMATE (no RAPL: {why}): CPU time per inference x {WATTS_PER_CORE} W per busy core "
                    f"(a server core's TDP share); ideal = nonzero MACs x {PJ_PER_MAC} pJ (fp32 multiply-add, "
                    "45 nm, Horowitz 2014), arithmetic only, what sparse hardware could approach"}


def measure_rapl(models: list[onnx.ModelProto], feed: dict, rounds: int = 5, threads: int = 0) -> list[float]:
    """Median RAPL millijoules per inference of each model over interleaved rounds."""
    sessions = [session(m, threads) for m in models]
    values = np.zeros((rounds, len(sessions)))
    for r in range(rounds):
        for i, s in enumerate(sessions):
            values[r, i] = measure_energy(lambda s=s: s.run(None, feed), min_seconds=0.2)["mj_per_inference"]
    return [float(np.median(values[:, i])) for i in range(len(sessions))]


def energy_columns(stats: dict, timing: Timing, method: dict, rapl_mj: float | None) -> dict:
    """Energy per inference in microjoules: measured (RAPL) or estimated from CPU time; and ideal."""
    ideal = stats["macs_nonzero"] * PJ_PER_MAC * 1e-6
    if method["kind"] == "rapl" and rapl_mj is not None:
        return {"energy_uj": round(rapl_mj * 1e3, 3), "energy_kind": "rapl", "energy_ideal_uj": round(ideal, 4)}
    return {"energy_uj": round(timing.cpu_ms * 1e-3 * WATTS_PER_CORE * 1e6, 3), "energy_kind": "estimate",
            "energy_ideal_uj": round(ideal, 4)}
