#!/usr/bin/env python3
"""Wall time and peak memory of `prune(path, ratio=0.3)` (the library call, report included) plus
saving the result, each case in a fresh process.

Peak RSS is the child's own maximum resident set (os.wait4's rusage), imports included; the stage
columns are the seconds and the peak RSS reached by the end of each stage, read inside the child by
wrapping the stages `prune()` composes (so what runs is exactly `prune()`).

    python tools/bench_memory.py                          # light_vgg19 (as shipped and stored), ppocr_det,
                                                          # light_resnet50, chain 10000
    python tools/bench_memory.py --models light_vgg19 --chains 100000
    python tools/bench_memory.py --path my.onnx           # any model file
    python tools/bench_memory.py --models --chains --transformer 20x2048x8192 --calib-samples 4
                                                          # with --calib: N random samples (.npz), dynamic
                                                          # axes but the batch set to --calib-dim
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "tools"))

STORE = ("import sys, onnx; from onnxprune.load.fold import fold_constants; "
         "onnx.save(fold_constants(onnx.load(sys.argv[1])), sys.argv[2])")
STAGES = ("prepare", "choose_plan", "record_dense", "apply_and_recover", "evaluate", "save")


def child(path: str, ratio: float, bench_rounds: int | None, calib: str | None = None) -> dict:
    """Run prune() with each stage timed; print seconds and peak RSS (MB) after each."""
    from onnxprune import api
    from onnxprune.load.model import save_model_atomic

    marks: dict[str, dict] = {}

    def timed(name, fn):
        def run(*args, **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            marks[name] = {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            return result
        return run

    for name in STAGES[:-1]:
        if hasattr(api, name):  # older checkouts have fewer stages
            setattr(api, name, timed(name, getattr(api, name)))
    start = time.perf_counter()
    keywords = {} if bench_rounds is None else {"bench_rounds": bench_rounds}
    if calib:
        keywords["calib"] = calib
    result = api.prune(path, ratio, **keywords)
    with tempfile.TemporaryDirectory() as out:
        timed("save", save_model_atomic)(result.model, os.path.join(out, "pruned.onnx"))
    return {"stages": marks, "total_s": time.perf_counter() - start, "params": result.report["before"]["params"],
            "weights": 4 * result.report["before"]["params"],  # float32 models; loading the file to count would add to the peak
            "params_after": result.report["after"]["params"], "cosine": result.report["fidelity"]["cosine"]}


def write_calib(path: str, out: str, samples: int, dim: int) -> str:
    """`samples` random samples for every input of the model at `path` (its weights not loaded): normal
    floats, zero ints; a dynamic axis is 1 on the batch axis and `dim` elsewhere."""
    import numpy as np
    import onnx

    model = onnx.load(path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    rng, arrays = np.random.default_rng(0), {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.dim_value > 0 else (1 if axis == 0 else dim)
                for axis, d in enumerate(inp.type.tensor_type.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        shape = (samples, *dims)
        arrays[inp.name] = (rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                            else np.zeros(shape, dtype))
    np.savez(out, **arrays)
    return out


def run_case(path: str, ratio: float, bench_rounds: int | None, calib: str | None = None) -> dict:
    """One fresh process: its wall time, its own peak RSS, and what it printed."""
    cmd = [sys.executable, __file__, "--child", path, "--ratio", str(ratio)]
    if calib:
        cmd += ["--calib", calib]
    if bench_rounds is not None:
        cmd += ["--bench-rounds", str(bench_rounds)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's maximum
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        printed, errors = out.read(), err.read()
    if proc.returncode:
        raise RuntimeError(f"{path}: child failed:\n{errors[-2000:]}")
    found = json.loads(printed.strip().splitlines()[-1])
    found["wall_s"] = wall
    found["peak_mb"] = usage.ru_maxrss / 1024
    found["cpu_s"] = usage.ru_utime + usage.ru_stime  # steadier than wall seconds on a shared machine
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["light_vgg19", "ppocr_det", "light_resnet50"],
                        help="zoo names (python -m onnxprune.load.zoo NAME)")
    parser.add_argument("--chains", type=int, nargs="*", default=[10000], help="generated chain graphs, node counts")
    parser.add_argument("--path", nargs="*", default=[], help="model files")
    parser.add_argument("--transformer", nargs="*", default=[], metavar="LxHxF",
                        help="generated pre-norm transformers (tools/make_big_transformer.py), layers x hidden x "
                             "ffn, e.g. 20x2048x8192 (1.0B parameters, 4 GB: written to the temporary folder)")
    parser.add_argument("--stored", nargs="*", default=["light_vgg19"],
                        help="zoo models also measured with their weights stored (folded once and saved), as real exports are")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--bench-rounds", type=int, default=None, help="latency rounds in the report (default: prune's)")
    parser.add_argument("--calib-samples", type=int, default=0, help="prune with --calib: this many random samples")
    parser.add_argument("--calib-dim", type=int, default=64, help="dynamic axes of the samples but the batch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--calib", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.ratio, args.bench_rounds, args.calib)))
        return 0

    from onnxprune.load import zoo

    cases = [(name, str(zoo.fetch(name))) for name in args.models] + [(Path(p).name, p) for p in args.path]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # models are made in their own processes: a child's max RSS starts from its parent's at fork
        for name in args.stored:
            path = os.path.join(tmp, f"{name}_stored.onnx")
            subprocess.run([sys.executable, "-c", STORE, str(zoo.fetch(name)), path], check=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            cases.append((f"{name} (weights stored)", path))
        for shape in args.transformer:
            layers, hidden, ffn = (int(v) for v in shape.split("x"))
            path = os.path.join(tmp, f"transformer_{shape}.onnx")
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_big_transformer.py"), path, "--layers",
                            str(layers), "--hidden", str(hidden), "--ffn", str(ffn)], check=True)
            cases.append((f"transformer {shape}", path))
        for n in args.chains:
            path = os.path.join(tmp, f"chain_{n}.onnx")
            subprocess.run([sys.executable, str(ROOT / "tools" / "make_chain.py"), str(n), path], check=True)
            cases.append((f"chain of {n} nodes", path))
        for name, path in cases:
            calib = (write_calib(path, os.path.join(tmp, "calib.npz"), args.calib_samples, args.calib_dim)
                     if args.calib_samples else None)
            r = run_case(path, args.ratio, args.bench_rounds, calib)
            rows.append((name, r["weights"], r))
            print(f"{name}: {r['wall_s']:.1f} s, peak {r['peak_mb']:.0f} MB", file=sys.stderr)
    head = ["model", "weights MB", "wall s", "CPU s", "peak RSS MB", "peak / weights"] + [f"{s} s / CPU s / MB" for s in STAGES]
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, weights, r in rows:
        cells = [name, f"{weights / 2**20:.1f}", f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_mb']:.0f}",
                 f"{r['peak_mb'] * 2**20 / weights:.1f}x"]
        cells += [f"{r['stages'][s]['s']:.1f} / {r['stages'][s]['cpu_s']:.1f} / {r['stages'][s]['peak_mb']:.0f}"
                  if s in r["stages"] else "-"
                  for s in STAGES]
        print("| " + " | ".join(cells) + " |")
    with_calib = f", calib=<{args.calib_samples} random samples>" if args.calib_samples else ""
    print(f"\n`prune(path, ratio={args.ratio}{with_calib})` + save, one fresh process per model; peak RSS includes imports "
          "(about 150 MB); CPU s is the process's user + system time; stage cells are seconds in the stage / "
          "its CPU seconds / peak RSS (MB) reached by its end.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
