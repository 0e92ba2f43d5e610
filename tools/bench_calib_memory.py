#!/usr/bin/env python3
"""Benchmark: peak memory and time of pruning with calibration, each configuration in its own process.

Each run happens in a fresh child process that builds `--samples` synthetic images (uniform noise in the
model's input range; memory does not depend on the content), prunes with the given configuration and
reports `resource.getrusage(RUSAGE_SELF).ru_maxrss` (peak resident set size), the time, and the peak of
a child that only loads the model and the data (the floor: weights + calibration array). The fidelity
report is computed on 4 samples so that it does not dominate (validate.compare holds every output).

    python tools/bench_calib_memory.py --model ppocr_det --samples 256 --shape 3,640,640
    python tools/bench_calib_memory.py --model ppocr_rec --samples 32,64,128 --shape 3,48,320

Prints a Markdown table and exits 0 (a failed or killed run is a row, not an exit status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, {root!r})
import numpy as np, onnx
import onnxprune
from onnxprune.load import zoo
from onnxprune.load.data import Dataset
cfg = json.loads({cfg!r})
t0 = time.time()
model = onnx.load(zoo.fetch(cfg["model"]))
shape = tuple(cfg["shape"])
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (cfg["samples"], 1) + shape).astype(np.float32)
name = [i.name for i in model.graph.input if i.name not in {{t.name for t in model.graph.initializer}}][0]
data = Dataset({{name: x}})
out = {{"floor_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
if cfg["recover"] != "load-only":
    r = onnxprune.prune(model, calib=data, criterion=cfg["criterion"], scope=cfg["scope"], recover=cfg["recover"],
                        target_macs=cfg["target"], bench_rounds=0, eval_data=data.take(4),
                        input_shapes={{name: (1,) + shape}})
    out["macs"] = r.report["after"]["macs"] / r.report["before"]["macs"]
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["seconds"] = time.time() - t0
print("RESULT " + json.dumps(out))
"""


def run(cfg: dict, limit_gb: float) -> dict:
    code = CHILD.format(root=str(ROOT), cfg=json.dumps(cfg))
    cmd = ["prlimit", f"--as={int(limit_gb * 2 ** 30)}", sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:160]}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ppocr_rec")
    ap.add_argument("--shape", default="3,48,320", help="one sample's input shape without the batch axis")
    ap.add_argument("--samples", default="32", help="comma-separated calibration sizes")
    ap.add_argument("--configs", default="reconstruction:global:lstsq,reconstruction:global:sequential",
                    help="criterion:scope:recover triples")
    ap.add_argument("--target", type=float, default=0.8, help="MACs fraction kept")
    ap.add_argument("--limit-gb", type=float, default=8.0, help="address-space cap per child (prlimit --as)")
    args = ap.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    print(f"## Peak memory of pruning with calibration: {args.model}, input 1x{'x'.join(map(str, shape))}, "
          f"target MACs {args.target:g}\n")
    print("| samples | criterion | scope | recover | floor MB (weights + data) | peak RSS MB | above floor MB | "
          "s | MACs kept |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|")
    for n in (int(v) for v in args.samples.split(",")):
        for triple in args.configs.split(","):
            crit, scope, rec = triple.split(":")
            r = run({"model": args.model, "shape": shape, "samples": n, "criterion": crit, "scope": scope,
                     "recover": rec, "target": args.target}, args.limit_gb)
            if "error" in r:
                print(f"| {n} | {crit} | {scope} | {rec} | | {r['error']} | | | |")
                continue
            print(f"| {n} | {crit} | {scope} | {rec} | {r['floor_mb']:.0f} | {r['peak_mb']:.0f} | "
                  f"{r['peak_mb'] - r['floor_mb']:.0f} | {r['seconds']:.0f} | {r.get('macs', float('nan')):.3f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
