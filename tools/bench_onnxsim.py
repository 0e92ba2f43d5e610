#!/usr/bin/env python3
"""onnxsim 0.8.1's structured pruning against onnxprune's defaults, same models, same MACs, one table.

Benchmark-only dependency (never imported by onnxprune itself): `pip install onnxsim==0.8.1` (the
`compare` extra). Usage, from the worktree root:

    python tools/bench_onnxsim.py --models ppocr_cls,magika --levels 0.8,0.5 --json out.json

For each model (tools/tasks.py: offline data, 32 calibration samples, a disjoint evaluation set) and each
fraction of the dense MACs, four methods, each in its own subprocess (address space capped, timed out):

- onnxsim_l2: `onnxsim.simplify`, then `onnxsim.apply_structured_pruning_cpp(sparsity=s)` (per-chain
  L2 filter magnitude, its default). onnxsim takes a sparsity, not a MACs target, so s is bisected until
  the pruned model's MACs land within --tol of the target; when even s=0.98 stays above, the cell shows
  the MACs onnxsim could reach;
- onnxsim_wanda: the same with `apply_structured_wanda_pruning_cpp(calibration_data=the 32 samples)`
  (||W_row|| x ||X||);
- onnxprune_l2: `onnxprune.prune(target_macs=level)` without data: its data-free default
  (l2 / local / no recovery);
- onnxprune_calib: `onnxprune.prune(target_macs=level, calib=the 32 samples)`: its data-aware default.

MACs and params of every model are counted the same way, by onnxprune.graph.cost at the task's input
shapes, relative to the unsimplified dense model. Validity: `onnx.checker.check_model(full_check=True)`
and the evaluation set run through ONNX Runtime; a model that fails either is "invalid" with the reason.
No model is trained. Output: a Markdown table, and every figure with --json (rewritten after each cell;
--resume reuses the cells it already holds).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
import warnings
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(1, str(TOOLS.parent))  # onnxprune from this checkout when not installed

import numpy as np  # noqa: E402

import bench_tasks  # noqa: E402  (subprocess capping, one-line errors, revision)

METHODS = ("onnxsim_l2", "onnxsim_wanda", "onnxprune_l2", "onnxprune_calib")
MAX_SPARSITY = 0.98
FIXTURES = TOOLS.parent / "fixtures"


def digits_task():
    """The digits CNN of tools/bench_torch_pruning.py (fixtures/digits_cnn.onnx), so that onnxsim sits next
    to the Torch-Pruning figures of docs/benchmarks.md section 2: accuracy on the 397 test digits,
    calibration on the training digits without labels."""
    import onnx

    import tasks

    class DigitsCNN(tasks.Task):
        name, metric = "digits_cnn", "accuracy %"

        def model(self):
            return onnx.load(FIXTURES / "digits_cnn.onnx")

        def input_shapes(self):
            return {"input": (1, 1, 8, 8)}

        def calibration(self, n=32):
            return {"input": np.load(FIXTURES / "digits_calib.npz")["input"][:n]}

        def evaluation(self, n=None):
            z = np.load(FIXTURES / "digits_test.npz")
            return tasks.EvalSet(tasks.batched("input", z["input"], 128), list(z["labels"]), "397 test digits")

        def predict(self, sess, ev):
            return [int(k) for (p,) in self.run(sess, ev) for k in p.argmax(1)]

        def score(self, preds, ev, dense_preds):
            return {"score": 100 * float(np.mean(np.array(preds) == np.array(ev.labels)))}

    return DigitsCNN()


def get_task(name: str):
    import tasks

    return digits_task() if name == "digits_cnn" else tasks.get(name)


def cost(model, shapes) -> tuple[int, int]:
    """(MACs, params) as onnxprune counts them, at the task's input shapes."""
    from onnxprune.graph.cost import count_macs, count_params
    from onnxprune.graph.model_graph import ModelGraph

    g = ModelGraph(model, shapes)
    return count_macs(g), count_params(g)


def calib_batches(calib: dict[str, np.ndarray], ranks: dict[str, int] | None = None, batch: int = 8) -> list[dict[str, np.ndarray]]:
    """Feed dicts of `batch` samples. A task may stack whole feeds (samples x the model's batch-1 input,
    one axis more than the model takes): those are merged into the batch axis."""
    calib = {k: v.reshape(-1, *v.shape[2:]) if v.ndim == (ranks or {}).get(k, v.ndim) + 1 else v for k, v in calib.items()}
    n = len(next(iter(calib.values())))
    return [{k: v[i:i + batch] for k, v in calib.items()} for i in range(0, n, batch)]


def onnxsim_search(model, shapes, dense_macs: int, level: float, tol: float, prune_fn) -> tuple[object, float, list]:
    """Bisect onnxsim's sparsity until the pruned MACs are within `tol` of `level` x dense (MACs fall as
    sparsity rises). Returns the closest model, its sparsity and the (sparsity, MACs fraction) tried."""
    tried: list[tuple[float, float]] = []
    best = None

    def attempt(s: float):
        nonlocal best
        pruned = prune_fn(model, s)
        frac = cost(pruned, shapes)[0] / dense_macs
        tried.append((round(s, 4), round(frac, 4)))
        if best is None or abs(frac - level) < abs(best[2] - level):
            best = (pruned, s, frac)
        return frac

    lo, hi = 0.0, MAX_SPARSITY
    if attempt(hi) <= level + tol:
        for _ in range(12):
            mid = (lo + hi) / 2
            frac = attempt(mid)
            if abs(frac - level) <= tol:
                break
            lo, hi = (mid, hi) if frac > level else (lo, mid)
    return best[0], best[1], tried


def validity(path: str) -> str:
    """'ok' or the checker's one-line complaint."""
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:  # noqa: BLE001 - any checker failure is a finding, reported as text
        return "checker: " + bench_tasks.one_line(str(exc))
    return "ok"


def prune_one(spec: dict, task, dense_path: str):
    """The pruned model and what the method reports about itself."""
    import onnx

    shapes = task.input_shapes()
    method, level = spec["method"], spec["level"]
    if method.startswith("onnxprune"):
        import onnxprune

        calib = spec["calib"] if method == "onnxprune_calib" else None
        r = onnxprune.prune(dense_path, target_macs=level, calib=calib, input_shapes=shapes, bench_rounds=0)
        return r.model, {"options": {k: r.report.get("options", {}).get(k) for k in ("criterion", "scope", "recover")}}
    import onnxsim

    simplified, ok = onnxsim.simplify(onnx.load(dense_path))
    if method == "onnxsim_l2":
        def prune_fn(m, s):
            return onnxsim.apply_structured_pruning_cpp(m, sparsity=s)
    else:
        ranks = {i.name: len(i.type.tensor_type.shape.dim) for i in simplified.graph.input}
        fixed_one = any(i.type.tensor_type.shape.dim[0].dim_value == 1 for i in simplified.graph.input
                        if i.type.tensor_type.shape.dim)  # a static batch of 1 (ddddocr) takes one sample a run
        batches = calib_batches(dict(np.load(spec["calib"])), ranks, batch=1 if fixed_one else 8)

        def prune_fn(m, s):
            return onnxsim.apply_structured_wanda_pruning_cpp(m, calibration_data=batches, sparsity=s)
    dense_macs = cost(onnx.load(dense_path), shapes)[0]
    pruned, sparsity, tried = onnxsim_search(simplified, shapes, dense_macs, level, spec["tol"], prune_fn)
    return pruned, {"simplify_ok": bool(ok), "sparsity": sparsity, "search": tried}


def worker(spec_path: str) -> int:
    """Prune one (model, method, level), check and score it; write the result JSON named in the spec."""
    import onnx

    import tasks

    warnings.filterwarnings("ignore")
    spec = json.loads(Path(spec_path).read_text())
    task = get_task(spec["model"])
    with open(spec["eval"], "rb") as fh:
        ev, dense_preds = pickle.load(fh)
    dense_path = spec["dense"]
    t0 = time.time()
    pruned, info = prune_one(spec, task, dense_path)
    result = {"prune_s": time.time() - t0, **info}
    path = str(Path(spec["out"]).with_suffix(".onnx"))
    onnx.save(pruned, path)
    (dm, dp), (pm, pp) = cost(onnx.load(dense_path), task.input_shapes()), cost(pruned, task.input_shapes())
    result.update(macs=pm / dm, params=pp / dp, valid=validity(path))
    try:
        preds = task.predict(tasks.session(path), ev)
        result.update({k: float(v) for k, v in task.score(preds, ev, dense_preds).items()})
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime refusing the model is the finding
        result["valid"] = ("" if result["valid"] == "ok" else result["valid"] + "; ") + \
            "onnxruntime: " + bench_tasks.one_line(str(exc))
    Path(path).unlink()
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def fmt_cell(res: dict, dense: float) -> str:
    if "error" in res:
        return "error: " + res["error"].replace("|", "/")[:120]
    score = f"{res['score']:.1f} ({res['score'] - dense:+.1f})" if "score" in res else "no score"
    valid = "" if res.get("valid") == "ok" else " · **invalid**: " + res.get("valid", "?").replace("|", "/")[:100]
    return f"{score} · MACs {res['macs']:.2f} · params {res['params']:.2f}{valid}"


def table(rows: list[dict], levels: list[float]) -> str:
    lines = ["| model (metric, dense) | method | " + " | ".join(f"{lv:g} of MACs" for lv in levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for row in rows:
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        head = f"{row['model']} ({row['metric']}, {arrow}; dense {row['dense']:.1f})"
        cells = [fmt_cell(row["levels"].get(str(lv), {"error": "not run"}), row["dense"]) for lv in levels]
        lines.append(f"| {head} | {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short(res: dict, level: float) -> str:
    """One level of a compact cell: the score, and the achieved MACs only when off the target."""
    if "error" in res:
        err = res["error"]
        return err if err == "not run" else "out of memory" if err.startswith("crashed") else \
            "timeout" if err.startswith("timeout") else "error"
    off = abs(res["macs"] - level) > 0.02
    macs = " (nothing removed)" if min(res["macs"], res["params"]) > 0.999 else f" (MACs {res['macs']:.2f})" if off else ""
    if res.get("valid", "ok") != "ok":
        what = "ORT refuses" if "onnxruntime" in res["valid"] else "checker rejects"
        return f"invalid: {what}{macs}" + (f", {res['score']:.1f}" if "score" in res else "")
    return f"{res['score']:.1f}{macs}"


def compact(rows: list[dict], levels: list[float]) -> str:
    """One row per model, one column per method; each cell the scores at every level ('a / b')."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    models: dict[str, dict] = {}
    for r in rows:
        models.setdefault(r["model"], {"row": r, "cells": {}})["cells"][r["method"]] = r
    lines = ["| model (metric, dense) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name, m in models.items():
        r = m["row"]
        head = f"{name} ({r['metric']}, {'higher' if r['higher_is_better'] else 'lower'} is better; dense {r['dense']:.1f})"
        cells = [" / ".join(short(m["cells"][k]["levels"].get(str(lv), {"error": "not run"}), lv) for lv in levels)
                 if k in m["cells"] else "not run" for k in methods]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prepare(name: str, work: Path, calib_n: int, eval_n: int | None) -> dict:
    """Save the dense model, its calibration and evaluation sets; score the dense model once."""
    import onnx

    import tasks

    task = get_task(name)
    dense_path = work / f"{name}.onnx"
    onnx.save(task.model(), dense_path)
    ev = task.evaluation(eval_n)
    calib_path = work / f"{name}_calib.npz"
    np.savez(calib_path, **task.calibration(calib_n))
    dense_preds = task.predict(tasks.session(str(dense_path)), ev)
    eval_path = work / f"{name}_eval.pkl"
    with open(eval_path, "wb") as fh:
        pickle.dump((ev, dense_preds), fh)
    return {"task": task, "dense": str(dense_path), "calib": str(calib_path), "eval": str(eval_path),
            "dense_score": task.score(dense_preds, ev, dense_preds)["score"], "info": ev.info}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=bench_tasks.DEFAULT_MODELS, help="task names (tools/tasks.py), comma-separated")
    ap.add_argument("--levels", default="0.8,0.5", help="fractions of the dense MACs kept")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {', '.join(METHODS)}")
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--eval-n", type=int, default=None)
    ap.add_argument("--tol", type=float, default=0.01, help="MACs fraction tolerance of onnxsim's sparsity search")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space cap of each run")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", help="write every figure here (after each cell)")
    ap.add_argument("--resume", action="store_true", help="reuse the successful cells --json already holds")
    ap.add_argument("--table-from", help="print the table of earlier --json files (comma-separated) and exit")
    ap.add_argument("--compact", action="store_true", help="with --table-from: one row per model, methods as columns")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.table_from:
        runs = [json.loads(Path(p).read_text()) for p in args.table_from.split(",")]
        rows = [row for r in runs for row in r["results"]]
        print(compact(rows, runs[0]["levels"]) if args.compact else table(rows, runs[0]["levels"]))
        return 0
    warnings.filterwarnings("ignore")
    import onnxprune
    import onnxsim

    levels = [float(v) for v in args.levels.split(",")]
    old = json.loads(Path(args.json).read_text()) if args.resume and args.json and Path(args.json).is_file() else None
    done = {(r["model"], r["method"], lv): c for r in (old or {}).get("results", [])
            for lv, c in r["levels"].items() if "error" not in c}
    meta = {"onnxprune": bench_tasks._revision(onnxprune), "onnxsim": onnxsim.__version__, "levels": levels,
            "calib_n": args.calib_n, "results": []}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_onnxsim_") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            p = prepare(name, work, args.calib_n, args.eval_n)
            print(f"# {name}: {p['info']}; dense {p['task'].metric} {p['dense_score']:.2f}", file=sys.stderr, flush=True)
            for method in args.methods.split(","):
                row = {"model": name, "metric": p["task"].metric, "higher_is_better": p["task"].higher_is_better,
                       "dense": p["dense_score"], "method": method, "eval": p["info"], "levels": {}}
                meta["results"].append(row)
                for lv in levels:
                    res = done.get((name, method, str(lv)))
                    if res is None:
                        spec = {"model": name, "method": method, "level": lv, "dense": p["dense"], "calib": p["calib"],
                                "eval": p["eval"], "tol": args.tol, "tag": f"{name}_{method}_{lv:g}"}
                        res = run_one(spec, work, args.mem_gb, args.timeout)
                    row["levels"][str(lv)] = res
                    if args.json:
                        Path(args.json).write_text(json.dumps(meta, indent=1))
                    print(f"  {name} {method} {lv:g}: {fmt_cell(res, p['dense_score'])}", file=sys.stderr, flush=True)
    print(f"onnxprune at {meta['onnxprune']}, onnxsim {meta['onnxsim']}; {args.calib_n} calibration samples; "
          f"no training; memory cap {args.mem_gb:g} GB per run; {time.time() - started:.0f} s.\n")
    print(table(meta["results"], levels))
    return 0


def run_one(spec: dict, work: Path, mem_gb: float, timeout: float) -> dict:
    """bench_tasks.run_one with this script as the worker."""
    return bench_tasks.run_one(spec, work, mem_gb, timeout, script=__file__)


if __name__ == "__main__":
    sys.exit(main())
