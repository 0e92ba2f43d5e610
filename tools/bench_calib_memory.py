#!/usr/bin/env python3
"""Benchmark: peak memory and time of pruning with calibration, each configuration in its own process.

Each run happens in a fresh child process that prunes `--samples` synthetic images (uniform noise in the
model's input range; memory does not depend on the content) with the given configuration and reports
`resource.getrusage(RUSAGE_SELF).ru_maxrss` (peak resident set size), the time, and the peak of a child
that only loads the model and the data (the floor). `--source` says how the samples reach prune():
`ram` (a Dataset built in the child: the floor is weights + the calibration array), or a file written
once before the runs, as a user gives it with --calib: `npz` (np.savez), `npz-compressed`
(np.savez_compressed) or `images` (a folder of PNG files); these are read a batch at a time
(load/rows.py), so their floor is the weights. The fidelity report is computed on 4 samples.

    python tools/bench_calib_memory.py --model ppocr_det --samples 256 --shape 3,640,640 --source npz
    python tools/bench_calib_memory.py --model ppocr_rec --samples 32,64,128 --shape 3,48,320

Prints a Markdown table and exits 0 (a failed or killed run is a row, not an exit status).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
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
import os, threading, traceback
peak = {{"rss": 0, "where": ""}}
main_id = threading.get_ident()
def watch():  # where the peak happens: the onnxprune frames of the main thread at each new maximum
    page = os.sysconf("SC_PAGE_SIZE")
    while True:
        rss = int(open("/proc/self/statm").read().split()[1]) * page
        if rss > peak["rss"]:
            frames = traceback.extract_stack(sys._current_frames()[main_id])
            mine = [f"{{f.filename.rsplit('/', 1)[-1]}}:{{f.name}}" for f in frames if "onnxprune/" in f.filename]
            peak.update(rss=rss, where=" < ".join(mine[::-1][:4]))
        time.sleep(0.2)
threading.Thread(target=watch, daemon=True).start()
t0 = time.time()
model = onnx.load(zoo.fetch(cfg["model"]))
shape = tuple(cfg["shape"])
name = [i.name for i in model.graph.input if i.name not in {{t.name for t in model.graph.initializer}}][0]
if cfg["path"]:
    from onnxprune.score.calibration import load_calibration
    data = load_calibration(cfg["path"], {{name: len(shape) + 1}}, limit=cfg["samples"])
else:
    rng = np.random.default_rng(0)
    data = Dataset({{name: rng.uniform(-1, 1, (cfg["samples"], 1) + shape).astype(np.float32)}})
out = {{"floor_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
if cfg["recover"] != "load-only":
    r = onnxprune.prune(model, calib=cfg["path"] or data, criterion=cfg["criterion"], scope=cfg["scope"],
                        recover=cfg["recover"], target_macs=cfg["target"], bench_rounds=0, eval_data=data.take(4),
                        input_shapes={{name: (1,) + shape}}, calib_limit=cfg["samples"],
                        calib_views=cfg.get("views"),
                        **({{"max_layer_ratio": cfg["cap"]}} if cfg["cap"] else {{}}))
    out["macs"] = r.report["after"]["macs"] / r.report["before"]["macs"]
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["seconds"] = time.time() - t0
out["peak_at"] = peak["where"]
print("RESULT " + json.dumps(out))
"""


def input_name(model: str) -> str:
    """The model's first graph input that is not an initializer: the key an .npz must use."""
    import onnx

    from onnxprune.load import zoo

    graph = onnx.load(zoo.fetch(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return next(i.name for i in graph.input if i.name not in weights)


def write_source(kind: str, folder: Path, samples: int, shape: list[int], name: str = "x") -> str:
    """The samples as a user would give them: an .npz (its member written a sample at a time, so this
    process never holds them all) or a folder of PNG images. Empty string for `ram`."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "images":
        from PIL import Image
        for i in range(samples):
            pixels = rng.integers(0, 256, (shape[1], shape[2], shape[0]), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if shape[0] == 1 else pixels).save(folder / f"{i:05d}.png")
        return str(folder)
    if kind == "ram":
        return ""
    path = folder / "calib.npz"
    method = zipfile.ZIP_DEFLATED if kind == "npz-compressed" else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf, zf.open(f"{name}.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (samples, 1, *shape)})
        for _ in range(samples):
            f.write(rng.uniform(-1, 1, (1, *shape)).astype(np.float32).tobytes())
    return str(path)


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
                    help="criterion:scope:recover triples, optionally :max_layer_ratio")
    ap.add_argument("--target", type=float, default=0.8, help="MACs fraction kept")
    ap.add_argument("--calib-views", type=int, default=None, help="views of each sample (prune(calib_views=K); "
                    "default: prune's)")
    ap.add_argument("--limit-gb", type=float, default=8.0, help="address-space cap per child (prlimit --as)")
    ap.add_argument("--source", default="ram", choices=["ram", "npz", "npz-compressed", "images"],
                    help="how the samples reach prune() (see the module doc)")
    args = ap.parse_args(argv)
    shape = [int(v) for v in args.shape.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_calib_"))
    print(f"## Peak memory of pruning with calibration: {args.model}, input 1x{'x'.join(map(str, shape))}, "
          f"target MACs {args.target:g}, samples from {args.source}\n")
    print("| samples | criterion | scope | recover | floor MB (weights + data) | peak RSS MB | above floor MB | "
          "s | MACs kept | load (1 min) | where the peak is (sampled) |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    sizes = [int(v) for v in args.samples.split(",")]
    try:
        # smaller sizes read the first rows; the member is named after the model's input, as --calib wants
        path = write_source(args.source, work, max(sizes), shape, input_name(args.model))
        _table(args, sizes, shape, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _table(args, sizes: list[int], shape: list[int], path: str) -> None:
    for n in sizes:
        for triple in args.configs.split(","):
            crit, scope, rec, *cap = triple.split(":")  # an optional fourth field: --max-layer-ratio
            r = run({"model": args.model, "shape": shape, "samples": n, "criterion": crit, "scope": scope,
                     "recover": rec, "target": args.target, "path": path, "views": args.calib_views,
                     "cap": float(cap[0]) if cap else None}, args.limit_gb)
            if "error" in r:
                print(f"| {n} | {crit} | {scope} | {rec} | | {r['error']} | | | | {os.getloadavg()[0]:.1f} | |")
                continue
            print(f"| {n} | {crit} | {scope} | {rec} | {r['floor_mb']:.0f} | {r['peak_mb']:.0f} | "
                  f"{r['peak_mb'] - r['floor_mb']:.0f} | {r['seconds']:.0f} | {r.get('macs', float('nan')):.3f} | "
                  f"{os.getloadavg()[0]:.1f} | {r.get('peak_at', '')} |",
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
