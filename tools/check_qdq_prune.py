#!/usr/bin/env python3
"""Prune a QDQ task model (tools/tasks.py, tools/tasks_extra.py) and check it stays a QDQ model ONNX
Runtime fuses: the op-type histogram before and after, the weights' dtypes and per-channel scales, the
bias-scale invariant (bias scale = input scale x weight scale), and the fused integer ops ORT builds
(QLinearConv, QGemm, ...) in the dense and the pruned model (exit 1 if those differ).

    python tools/check_qdq_prune.py orinet_qdq --level 0.8 [--calib-n 32]
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))


def histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def fused_ops(model: onnx.ModelProto) -> dict[str, int]:
    """The op types of the graph ONNX Runtime runs after its optimizations (QDQ fused into QLinear*)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return histogram(onnx.load(opts.optimized_model_filepath))


def bias_invariant(model: onnx.ModelProto) -> tuple[int, int]:
    """(biases whose scale is exactly input scale x weight scale, quantized biases checked)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    exact = total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in dq:
            continue
        x, w, b = (dq.get(t) for t in node.input[:3])
        if x is None or w is None or any(n.input[1] not in inits for n in (x, w, b)):
            continue
        total += 1
        want = (inits[x.input[1]].astype(np.float32) * inits[w.input[1]].astype(np.float32)).astype(np.float32)
        exact += bool(np.array_equal(want, inits[b.input[1]]))
    return exact, total


def weight_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    inits = {t.name: t for t in model.graph.initializer}
    kinds = collections.Counter()
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            scale = inits[n.input[1]]
            per = "per-channel" if len(scale.dims) == 1 and scale.dims[0] > 1 else "per-tensor"
            kinds[f"{onnx.helper.tensor_dtype_to_np_dtype(inits[n.input[0]].data_type)} {per}"] += 1
    return dict(kinds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a task name (tools/tasks.py, tools/tasks_extra.py)")
    ap.add_argument("--level", type=float, default=0.8, help="MACs fraction kept")
    ap.add_argument("--calib-n", type=int, default=32)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("onnxprune.qdq").setLevel(logging.INFO)  # how many channel scales grew (apply/qdq_lower.py)
    import onnxprune
    import tasks

    task = tasks.get(args.model)
    dense = task.model()
    with tempfile.TemporaryDirectory() as tmp:  # as tools/bench_tasks.py gives it: a .npz
        calib = Path(tmp) / "calib.npz"
        np.savez(calib, **task.calibration(args.calib_n))
        pruned = onnxprune.prune(dense, target_macs=args.level, calib=str(calib), input_shapes=task.input_shapes(),
                                 bench_rounds=0).model
    rows = [("op types", histogram(dense), histogram(pruned)), ("weights", weight_dtypes(dense), weight_dtypes(pruned)),
            ("bias scale = in x w (exact/checked)", bias_invariant(dense), bias_invariant(pruned)),
            ("ORT fused graph", fused_ops(dense), fused_ops(pruned))]
    for name, before, after in rows:
        print(f"{name}:\n  dense  {before}\n  pruned {after}")
    before, after = histogram(dense), histogram(pruned)
    changed = {op: after.get(op, 0) - before.get(op, 0) for op in {*before, *after} if after.get(op, 0) != before.get(op, 0)}
    print("op counts changed:", changed or "none",
          "(DequantizeLinear +N: biases recovery added to bias-free Convs, quantized int32)" if changed else "")
    same = fused_ops(dense) == fused_ops(pruned)
    print("same fused graph in ONNX Runtime:", same)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
