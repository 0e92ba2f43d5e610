"""ONNX Runtime sessions and batched runs, shared by validation, calibration and benchmarks."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.errors import BadInputError, first_line

from onnxprune.load.data import Dataset
from onnxprune.load.parked import Parked
from onnxprune.load.workdirs import PrivateDir
from onnxprune.load.spill import SPILL_BYTES, model_bytes, needs_spill, spilled


LARGE_GRAPH_NODES = 20_000
# ORT removes an initializer from its graph proto by a linear search: once per initializer after it
# holds the tensor, and once per duplicate its ConstantSharing optimizer merges. Both are quadratic in
# the count (40,000 initializers: 40 s instead of 13 s). It keeps them when asked to save the optimized
# model, so small-weight graphs with many constants are saved (to a temporary file) without ConstantSharing.
MANY_INITIALIZERS = 4096
QUADRATIC_OPTIMIZERS = ["ConstantSharing"]


def session(model: onnx.ModelProto | bytes | str | Parked, threads: int = 0, optimize: bool = True,
            providers: list[str] | None = None, arena: bool = True) -> ort.InferenceSession:
    """A quiet session on the CPU (or on `providers`, in order of preference). A parked model
    (load/parked.py) is read by ONNX Runtime from its file, built as its proto would be. `arena=False`
    for the short-lived segment sessions of streamed passes: ONNX Runtime's CPU arena kept what each
    had grown to (PP-OCRv4 det statistics at 480x320: 1.38 GB peak with it, 0.74 GB without)."""
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = arena
    from onnxprune.progress import runtime_log_level
    opts.log_severity_level = runtime_log_level()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    # no busy-waiting threads: interleaved sessions (dense, pruned, ...) would slow each other down
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif _nodes(model) > LARGE_GRAPH_NODES:
        # the extended and layout optimizers grow faster than linearly: 20 s for 10,000 nodes, 8 s for 5,000
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        parked = isinstance(model, Parked)
        if isinstance(model, (onnx.ModelProto, Parked)) and many_small_initializers(model):
            with PrivateDir("session") as folder:
                opts.optimized_model_filepath = os.path.join(folder, "session.onnx")
                sess = ort.InferenceSession(model.path if parked else model.SerializeToString(), opts,
                                            providers=providers or ["CPUExecutionProvider"],
                                            disabled_optimizers=QUADRATIC_OPTIMIZERS)
        elif isinstance(model, onnx.ModelProto) and needs_spill(model):
            # weights are memory-mapped from the file: packed copies of them would double the memory
            opts.add_session_config_entry("session.disable_prepacking", "1")
            with spilled(model) as path:  # ORT reads each weight once instead of parsing a serialized copy
                sess = ort.InferenceSession(path, opts, providers=providers or ["CPUExecutionProvider"])
        else:
            source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else getattr(model, "path", model)
            sess = ort.InferenceSession(source, opts, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # opset too new, cycles, unknown ops: the model, not a bug (one line)
        raise BadInputError(f"ONNX Runtime cannot load the model: {first_line(exc, 400)}") from None
    if isinstance(model, onnx.ModelProto):  # synthetic inputs must stay inside the tables they index
        from onnxprune.load.data import index_limits
        sess.index_limits = index_limits(model)
    elif isinstance(model, Parked):
        sess.index_limits = model.index_limits
    return sess


def _nodes(model) -> int:
    if isinstance(model, onnx.ModelProto):
        return len(model.graph.node)
    return model.nodes if isinstance(model, Parked) else 0


def many_small_initializers(model: onnx.ModelProto | Parked) -> bool:
    """Whether ORT's per-initializer removal would dominate building the session (see MANY_INITIALIZERS);
    only for models small enough that ORT keeping a second copy of the weights costs little."""
    if isinstance(model, Parked):
        return model.constants >= MANY_INITIALIZERS and model.size <= SPILL_BYTES
    graph = model.graph
    count = len(graph.initializer)
    if count < MANY_INITIALIZERS:
        count += sum(1 for n in graph.node if n.op_type == "Constant")
    return count >= MANY_INITIALIZERS and model_bytes(model) <= SPILL_BYTES


def batchable(sess: ort.InferenceSession) -> bool:
    """Whether every input has a dynamic first axis, so samples can be joined into batches."""
    for inp in sess.get_inputs():
        if not inp.shape or isinstance(inp.shape[0], int):
            return False
    return True


def run_dataset(sess: ort.InferenceSession, data: Dataset, batch_size: int = 32) -> list[np.ndarray]:
    """All outputs over the dataset, concatenated along the first axis."""
    chunks: list[list[np.ndarray]] = []
    for feed in data.batches(batch_size, batchable(sess)):
        chunks.append(sess.run(None, feed))
    outputs = []
    for i in range(len(chunks[0])):
        parts = [c[i] for c in chunks]
        if not isinstance(parts[0], np.ndarray):  # sequences and maps (ZipMap): kept as a list
            outputs.append(np.array([p for part in parts for p in part] if isinstance(parts[0], list) else parts,
                                    dtype=object))
        else:
            outputs.append(np.concatenate(parts) if parts[0].ndim else np.stack(parts))
    return outputs
