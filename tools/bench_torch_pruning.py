#!/usr/bin/env python3
"""Benchmark: onnxprune against Torch-Pruning on the digits CNN, same MACs, no fine-tuning.

The digits CNN in fixtures/digits_cnn.onnx (BatchNorm folded into the convs by the exporter) is rebuilt
in PyTorch from the ONNX weights (conv biases carry the folded BN), checked to reproduce the ONNX
outputs, then pruned with Torch-Pruning's MetaPruner and group-L2 magnitude importance
(GroupMagnitudeImportance(p=2), the DepGraph paper's default) to each fraction of MACs kept, local
(uniform per layer) and global ranking, exported to ONNX and scored on fixtures/digits_test.npz. The
same fractions are reached by onnxprune on the ONNX file directly. MACs of every model are counted
the same way: onnxprune.check.bench.count_macs on the ONNX graph. No model is trained or fine-tuned.

Benchmark-only dependencies (never imported by onnxprune itself):

    pip install torch==2.13.0 torch-pruning
    python tools/bench_torch_pruning.py

Prints Markdown tables and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import io
import logging
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import onnxprune  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402

LEVELS = (0.8, 0.7, 0.5, 0.3)
# onnxprune configurations compared (criterion, scope, recover). The first is the best label-free one
# in tools/bench_criteria.py (calibration inputs only, no labels); the second is the like-for-like
# counterpart of Torch-Pruning's uniform group-L2 pruning; the third isolates what recovery adds.
ONNXPRUNE_CONFIGS = (("activation", "global", "lstsq"), ("l2", "local", "none"), ("l2", "local", "lstsq"))


def tp_version() -> str:
    """The installed distribution's version (torch_pruning.__version__ can lag behind it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        import torch_pruning

        return getattr(torch_pruning, "__version__", "?")


def build_torch_model(onnx_path: str):
    """A PyTorch module with the ONNX graph's architecture and weights (conv -> relu ... -> fc)."""
    import torch
    import torch.nn as nn

    m = onnx.load(onnx_path)
    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    ops = [n.op_type for n in m.graph.node]
    expected = ["Conv", "Relu", "Conv", "Relu", "MaxPool", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]
    if ops != expected:
        raise SystemExit(f"unexpected digits graph {ops}; regenerate fixtures or update this script")

    class DigitsFolded(nn.Module):
        def __init__(self):
            super().__init__()
            w = [consts[c.input[1]] for c in convs]
            self.conv1 = nn.Conv2d(w[0].shape[1], w[0].shape[0], 3, padding=1)
            self.conv2 = nn.Conv2d(w[1].shape[1], w[1].shape[0], 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.conv3 = nn.Conv2d(w[2].shape[1], w[2].shape[0], 3, padding=1)
            self.gap = nn.AdaptiveAvgPool2d(1)
            fw = consts[gemm.input[1]]
            self.fc = nn.Linear(fw.shape[1], fw.shape[0])

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.relu(self.conv3(x))
            return self.fc(torch.flatten(self.gap(x), 1))

    model = DigitsFolded().eval()
    with torch.no_grad():
        for layer, node in zip((model.conv1, model.conv2, model.conv3), convs):
            layer.weight.copy_(torch.from_numpy(consts[node.input[1]]))
            layer.bias.copy_(torch.from_numpy(consts[node.input[2]]))
        model.fc.weight.copy_(torch.from_numpy(consts[gemm.input[1]]))
        model.fc.bias.copy_(torch.from_numpy(consts[gemm.input[2]]))
    return model


def export(model, path: Path) -> onnx.ModelProto:
    import torch

    x = torch.zeros(2, 1, 8, 8)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return onnx.load(str(path))


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def macs_of(model: onnx.ModelProto) -> int:
    return count_macs(ModelGraph(model, {"input": (1, 1, 8, 8)}))


def tp_prune(base, ratio: float, global_pruning: bool, max_layer_ratio: float):
    """A pruned deep copy of `base` (Torch-Pruning, group L2, no fine-tuning)."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(base)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 1, 8, 8), importance=imp, pruning_ratio=ratio,
                                  global_pruning=global_pruning, max_pruning_ratio=max_layer_ratio,
                                  ignored_layers=[model.fc], round_to=None)
    pruner.step()
    return model.eval()


def tp_to_target(base, target: float, global_pruning: bool, dense_macs: int, folder: Path,
                 max_layer_ratio: float = 0.9, steps: int = 30):
    """Bisect Torch-Pruning's pruning_ratio until the exported ONNX graph keeps `target` of the MACs."""
    lo, hi = 0.0, 0.95 if not global_pruning else 0.9
    best = None
    cache = {}
    for _ in range(steps):
        mid = (lo + hi) / 2
        model = tp_prune(base, mid, global_pruning, max_layer_ratio)
        key = tuple(int(p.shape[0]) for n, p in model.named_parameters() if n.endswith("weight"))
        if key not in cache:
            cache[key] = export(model, folder / f"tp_{len(cache)}.onnx")
        frac = macs_of(cache[key]) / dense_macs
        if best is None or abs(frac - target) < abs(best[1] - target):
            best = (cache[key], frac, mid, key)
        if abs(frac - target) < 0.002:
            break
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "fixtures/digits_cnn.onnx"))
    ap.add_argument("--calib", default=str(ROOT / "fixtures/digits_calib.npz"))
    ap.add_argument("--test", default=str(ROOT / "fixtures/digits_test.npz"))
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)

    import torch
    import torch_pruning  # noqa: F401  (fail early when the benchmark-only dependency is missing)

    torch.set_num_threads(1)
    levels = [float(v) for v in args.levels.split(",")]
    with np.load(args.test) as z:
        x_test, y_test = z["input"], z["labels"]
    dense_onnx = onnx.load(args.model)
    dense_macs = macs_of(dense_onnx)
    dense_out = run(dense_onnx, x_test)
    dense_acc = float((dense_out.argmax(1) == y_test).mean())
    started = time.time()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # 1. the PyTorch rebuild reproduces the ONNX model
        base = build_torch_model(args.model)
        with torch.no_grad():
            torch_out = base(torch.from_numpy(x_test)).numpy()
        rebuild_diff = float(np.abs(torch_out - dense_out).max())
        reexport = export(base, folder / "dense_torch.onnx")
        reexport_diff = float(np.abs(run(reexport, x_test) - dense_out).max())
        reexport_macs = macs_of(reexport)
        agree = float((torch_out.argmax(1) == dense_out.argmax(1)).mean())
        if rebuild_diff > 1e-4 or reexport_macs != dense_macs:
            print(f"rebuild mismatch: max |diff| {rebuild_diff}, MACs {reexport_macs} vs {dense_macs}")
            return 1

        # 2. label-free calibration for onnxprune
        with np.load(args.calib) as z:
            np.savez(folder / "calib.npz", input=z["input"])
        calib = str(folder / "calib.npz")

        rows = {}
        for level in levels:
            for glob in (False, True):
                model, frac, ratio, widths = tp_to_target(base, level, glob, dense_macs, folder)
                acc = float((run(model, x_test).argmax(1) == y_test).mean())
                rows["Torch-Pruning group-L2 " + ("global" if glob else "local"), level] = (acc, frac, widths)
            for crit, scope, rec in ONNXPRUNE_CONFIGS:
                r = onnxprune.prune(args.model, calib=calib, criterion=crit, scope=scope, recover=rec,
                                    target_macs=level, round_to=1, bench_rounds=0)
                frac = macs_of(r.model) / dense_macs
                widths = tuple(k for k, _ in r.plan.kept_per_group)
                acc = float((run(r.model, x_test).argmax(1) == y_test).mean())
                rows[f"onnxprune {crit} / {scope} / {rec}", level] = (acc, frac, widths)
    elapsed = time.time() - started

    methods = list(dict.fromkeys(k[0] for k in rows))
    print("## onnxprune vs Torch-Pruning on the digits CNN (same MACs, no fine-tuning)\n")
    print(f"torch {torch.__version__}, torch-pruning {tp_version()}; dense accuracy "
          f"{100 * dense_acc:.2f}% on {len(y_test)} test digits, {dense_macs / 1e6:.3f} M MACs; {elapsed:.0f} s.\n")
    print(f"PyTorch rebuild from the ONNX weights: max |logit diff| {rebuild_diff:.2e} on the test set, top-1 "
          f"agreement {100 * agree:.1f}%; its own ONNX export: max |diff| {reexport_diff:.2e}, MACs "
          f"{reexport_macs} (= {dense_macs}).\n")
    print("Accuracy % (achieved MACs fraction, counted by onnxprune.check.bench.count_macs on each ONNX graph). "
          "**Bold** = best at that level. onnxprune calibrates on the 256 training digits without labels; "
          "Torch-Pruning uses weights only. Both at channel granularity (round_to 1 / None).\n")
    print("| method | " + " | ".join(f"MACs {lv:g}" for lv in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    best = {lv: max(v[0] for (m, l2), v in rows.items() if l2 == lv) for lv in levels}
    for m in methods:
        cells = []
        for lv in levels:
            acc, frac, _ = rows[m, lv]
            text = f"{100 * acc:.2f} ({frac:.3f})"
            cells.append(f"**{text}**" if acc == best[lv] else text)
        print(f"| {m} | " + " | ".join(cells) + " |")
    print("| dense | " + " | ".join(f"{100 * dense_acc:.2f} (1.000)" for _ in levels) + " |")

    print("\nKept widths (conv1, conv2, conv3[, fc out]) of each pruned model:\n")
    print("| method | " + " | ".join(f"MACs {lv:g}" for lv in levels) + " |")
    print("|---|" + "---|" * len(levels))
    for m in methods:
        print(f"| {m} | " + " | ".join("/".join(map(str, rows[m, lv][2][:3])) for lv in levels) + " |")

    ours = "onnxprune " + " / ".join(ONNXPRUNE_CONFIGS[0])
    tp_best = {lv: max(rows[m, lv][0] for m in methods if m.startswith("Torch-Pruning")) for lv in levels}
    wins = [lv for lv in levels if rows[ours, lv][0] > tp_best[lv]]
    ties = [lv for lv in levels if rows[ours, lv][0] == tp_best[lv]]
    print(f"\n{ours} vs the better Torch-Pruning variant at each level: higher at {len(wins)}, equal at "
          f"{len(ties)}, lower at {len(levels) - len(wins) - len(ties)} of {len(levels)} ("
          + ", ".join(f"{lv:g}: {100 * rows[ours, lv][0]:.2f} vs {100 * tp_best[lv]:.2f}" for lv in levels) + ").")
    return 0


if __name__ == "__main__":
    sys.exit(main())
