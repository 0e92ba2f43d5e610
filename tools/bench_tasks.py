#!/usr/bin/env python3
"""Task metrics on real models: prune each model to each MACs level with each config, score it on its task.

Usage (from any worktree; PYTHONPATH picks the onnxprune that is measured):

    cd /work/wt-recon && PYTHONPATH=$PWD /work/main/.venv/bin/python /work/wt-harness/tools/bench_tasks.py \
        --models ppocr_rec,ppocr_cls --levels 0.9,0.8 --configs recon,mine='{"criterion":"reconstruction"}'

For each model (tools/tasks.py: data made offline, a calibration set and a disjoint evaluation set) the
dense model is scored once; then, for each config and level, a subprocess (address space capped by
--mem-gb, wall time by --timeout) runs

    onnxprune.prune(model, target_macs=level, calib=CALIB.npz, input_shapes=..., bench_rounds=0, **config)

scores the pruned model on the task, and measures its latency against the dense model (interleaved pairs
on one evaluation batch, one thread each, median of per-pair ratios). A failed run prints
"error: <one line>" in its cell. Output: a Markdown table (rows model x config, columns levels; each cell
"score (Δ points vs dense) · MACs kept · latency ratio") and, with --json, every figure.

A config is a preset name (l2, recon, activation, sensitivity) or NAME=JSON with prune() keyword
arguments, e.g. wanda='{"criterion":"activation","scope":"local","recover":"bias"}'.
Two keys are the harness's own: "calib": false prunes without the calibration data (the data-free path;
the task is still scored on its evaluation data), "steps": N prunes toward the level in N steps without
training (onnxprune/stepwise.py), "calib_copies": ["crop,scale", K] appends K augmented copies of every
calibration sample (onnxprune/load/augment.py) before pruning.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))  # tasks.py; onnxprune itself comes from PYTHONPATH (the measured worktree)

import numpy as np  # noqa: E402

PRESETS: dict[str, dict] = {
    "l2": {"criterion": "l2", "scope": "local", "recover": "none"},
    "recon": {"criterion": "reconstruction", "scope": "global", "recover": "lstsq"},
    "activation": {"criterion": "activation", "scope": "global", "recover": "lstsq"},
    "sensitivity": {"criterion": "sensitivity", "scope": "global", "recover": "lstsq"},
}
OOM_MARKS = ("MemoryError", "bad_alloc", "Failed to allocate", "Unable to allocate", "failed to map segment",
             "Cannot allocate memory")
DEFAULT_MODELS = "ppocr_rec,ppocr_cls,ppocr_det,nudenet_320n,ddddocr_common,magika"


def _augmented(calib: str, names: str, copies: int, out: str) -> str:
    """The calibration file with `copies` augmented copies of every sample (onnxprune/load/augment.py:
    flip, crop, scale) appended; unaugmentable inputs repeated as they are."""
    from onnxprune.load.augment import augment_batch
    with np.load(calib) as f:
        base = {k: f[k] for k in f.files}
    rng = np.random.default_rng(0)
    parts = [base] + [augment_batch(base, tuple(names.split(",")), rng) for _ in range(copies)]
    np.savez(out, **{k: np.concatenate([p[k] for p in parts]) for k in base})
    return out


def parse_configs(text: str) -> dict[str, dict]:
    """'l2,recon,mine={"criterion": "activation"}' -> {name: prune kwargs}. JSON may contain commas,
    so items are split at commas that start a new NAME or NAME=."""
    out: dict[str, dict] = {}
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "{[" and 1 or 0
        depth -= ch in "}]" and 1 or 0
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    for item in filter(None, (i.strip() for i in items)):
        name, _, spec = item.partition("=")
        if spec:
            out[name] = json.loads(spec)
        elif name in PRESETS:
            out[name] = dict(PRESETS[name])
        else:
            raise SystemExit(f"unknown config {name!r}: a preset ({', '.join(PRESETS)}) or NAME=JSON")
    return out


def latency_ratio(dense_path: str, pruned_path: str, feed: dict, rounds: int) -> float:
    """Pruned/dense latency on the first sample of `feed`, one thread each: `rounds` interleaved pairs,
    each side the fastest of several runs (about 20 ms of them; the minimum resists the other jobs on
    a shared machine), median of the per-pair ratios."""
    import tasks

    feed = {k: v[:1] for k, v in feed.items()}
    sd, sp = tasks.session(dense_path, threads=1), tasks.session(pruned_path, threads=1)
    for s in (sd, sp, sd, sp):  # warm-up
        s.run(None, feed)
    t0 = time.perf_counter()
    sd.run(None, feed)
    reps = min(50, max(3, int(0.02 / max(time.perf_counter() - t0, 1e-6))))

    from onnxprune.check.run_timing import fastest
    ratios = []
    for _ in range(rounds):
        d = fastest(sd, feed, reps)
        ratios.append(fastest(sp, feed, reps) / max(d, 1e-9))
    return float(np.median(ratios))


# ----------------------------------------------------------------------------- one pruning run (subprocess)

def worker(spec_path: str) -> int:
    """Prune, score, time; write the result JSON named in the spec. Runs in its own process."""
    import onnx

    import onnxprune
    import tasks

    warnings.filterwarnings("ignore")
    spec = json.loads(Path(spec_path).read_text())
    task = tasks.get(spec["model"])
    with open(spec["eval"], "rb") as fh:
        ev, dense_preds = pickle.load(fh)
    t0 = time.time()
    kwargs = dict(spec["kwargs"])
    # "calib": false runs the config without calibration data (the data-free path, as a user without data
    # would); "steps": N prunes toward the level in N steps without training (onnxprune/stepwise.py)
    calib = spec["calib"] if kwargs.pop("calib", True) else None
    if "calib_copies" in kwargs and calib:  # [names, k]: k augmented copies of every sample appended
        calib = _augmented(calib, *kwargs.pop("calib_copies"), str(Path(spec["out"]).with_suffix(".calib.npz")))
    steps = kwargs.pop("steps", 1)
    if steps > 1:
        from onnxprune.stepwise import prune_stepwise
        r = prune_stepwise(spec["dense"], steps, target_macs=spec["level"], calib=calib,
                           input_shapes=task.input_shapes(), bench_rounds=0, **kwargs)
    else:
        r = onnxprune.prune(spec["dense"], target_macs=spec["level"], calib=calib,
                            input_shapes=task.input_shapes(), bench_rounds=0, **kwargs)
    prune_s = time.time() - t0
    pruned_path = str(Path(spec["out"]).with_suffix(".onnx"))
    onnx.save(r.model, pruned_path)
    preds = task.predict(tasks.session(pruned_path), ev)
    result = {k: float(v) for k, v in task.score(preds, ev, dense_preds).items()}
    result["output_rel_err"] = output_error(spec["dense"], pruned_path, ev.feeds)
    result.update(macs=r.report["after"]["macs"] / r.report["before"]["macs"],
                  params=r.report["after"]["params"] / r.report["before"]["params"],
                  prune_s=prune_s,
                  latency=latency_ratio(spec["dense"], pruned_path, ev.feeds[0], spec["rounds"]) if spec["rounds"] else None)
    # peak resident memory of this run (prune + scoring), for the bounded-memory goal of issue 9
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if "stepwise" in r.report:  # each step's target and what re-scoring changed
        result["stepwise"] = r.report["stepwise"]["trail"]
    os.unlink(pruned_path)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


def output_error(dense_path: str, pruned_path: str, feeds: list[dict]) -> float:
    """Label-free fidelity: mean over float outputs of ||pruned - dense|| / ||dense|| on the evaluation
    feeds (a diagnostic: does output error rank two plans as the task metric does?)."""
    import tasks

    sd, sp = tasks.session(dense_path), tasks.session(pruned_path)
    num: dict[int, float] = {}
    den: dict[int, float] = {}
    for feed in feeds:
        for i, (d, p) in enumerate(zip(sd.run(None, feed), sp.run(None, feed))):
            d, p = np.asarray(d), np.asarray(p)
            if d.dtype.kind != "f" or d.shape != p.shape:
                continue
            num[i] = num.get(i, 0.0) + float(np.sum((p.astype(np.float64) - d) ** 2))
            den[i] = den.get(i, 0.0) + float(np.sum(d.astype(np.float64) ** 2))
    errs = [np.sqrt(num[i] / den[i]) for i in num if den[i] > 0]
    return float(np.mean(errs)) if errs else float("nan")


def _cap(mem_bytes: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    return apply


def one_line(text: str) -> str:
    """The most telling line of a traceback: the last non-empty one."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:160]


def run_one(spec: dict, workdir: Path, mem_gb: float, timeout: float, script: str = __file__) -> dict:
    """Run `script --worker SPEC` (this script's worker by default) in a subprocess with capped memory;
    a failure becomes {"error": one line}."""
    spec_path = workdir / f"spec_{spec['tag']}.json"
    spec["out"] = str(workdir / f"result_{spec['tag']}.json")
    spec_path.write_text(json.dumps(spec))
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, script, "--worker", str(spec_path)], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_cap(int(mem_gb * 2**30)), env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode == 0 and Path(spec["out"]).is_file():
        return json.loads(Path(spec["out"]).read_text())
    err = one_line(proc.stderr)
    if proc.returncode < 0 or any(m in proc.stderr for m in OOM_MARKS):
        err = f"out of memory (cap {mem_gb:g} GB, {time.time() - t0:.0f} s): {err}"
    return {"error": err}


# ----------------------------------------------------------------------------- table

def fmt_cell(res: dict, dense: float, higher: bool) -> str:
    if "error" in res:
        return "error: " + res["error"].replace("|", "/")
    delta = res["score"] - dense
    lat = f" · {res['latency']:.2f}x" if res.get("latency") is not None else ""
    return f"{res['score']:.1f} ({delta:+.1f}) · {res['macs']:.2f}{lat}"


def merge_rows(rows: list[dict]) -> list[dict]:
    """One row per (model, config) in order of first appearance; a later row's cells replace earlier ones."""
    merged: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["model"], row["config"])
        if key in merged:
            merged[key] = {**merged[key], **{k: v for k, v in row.items() if k != "levels"},
                           "levels": {**merged[key]["levels"], **row["levels"]}}
        else:
            merged[key] = row
    return list(merged.values())


def table(results: list[dict], levels: list[float]) -> str:
    lines = ["| model (metric, dense) | config | " + " | ".join(f"{lv:g}" for lv in levels) + " |",
             "|---|---|" + "---|" * len(levels)]
    for row in results:
        arrow = "higher is better" if row["higher_is_better"] else "lower is better"
        head = f"{row['model']} ({row['metric']}, {arrow}; dense {row['dense']:.1f})"
        cells = [fmt_cell(row["levels"].get(str(lv), {"error": "not run"}), row["dense"], row["higher_is_better"])
                 for lv in levels]
        lines.append(f"| {head} | {row['config']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated task names (tools/tasks.py)")
    ap.add_argument("--levels", default="0.9,0.8,0.7,0.6,0.5", help="MACs fractions kept")
    ap.add_argument("--configs", default="l2,recon", help="presets or NAME=JSON prune() kwargs, comma-separated")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples")
    ap.add_argument("--eval-n", type=int, default=None, help="evaluation samples (task default if omitted)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency pairs (0: no latency)")
    ap.add_argument("--mem-gb", type=float, default=12.0,
                    help="address-space cap of each pruning run (ppocr_rec with recon peaks near 7 GB RSS)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per pruning run")
    ap.add_argument("--skip", default="", help="model:config pairs not run, e.g. ppocr_det:recon")
    ap.add_argument("--json", help="write every figure here (rewritten after each cell)")
    ap.add_argument("--resume", action="store_true", help="reuse the cells that --json already holds")
    ap.add_argument("--table-from", help="print the table of earlier --json files (comma-separated) and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.table_from:
        runs = [json.loads(Path(p).read_text()) for p in args.table_from.split(",")]
        print("onnxprune at " + ", ".join(sorted({r["revision"] for r in runs})) + "\n")
        print(table(merge_rows([row for r in runs for row in r["results"]]), runs[0]["levels"]))
        return 0
    warnings.filterwarnings("ignore")

    import onnx

    import onnxprune
    import tasks

    levels = [float(v) for v in args.levels.split(",")]
    configs = parse_configs(args.configs)
    skip = set(filter(None, args.skip.split(",")))
    done = _measured(args.json) if args.resume else {}
    rev = _revision(onnxprune)
    started = time.time()
    results: list[dict] = []

    def save() -> None:  # after every cell, so an interrupted run can be resumed
        if args.json:
            Path(args.json).write_text(json.dumps({"revision": rev, "levels": levels, "results": results}, indent=1))

    with tempfile.TemporaryDirectory(prefix="bench_tasks_") as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            task = tasks.get(name)
            dense_path = work / f"{name}.onnx"
            onnx.save(task.model(), dense_path)
            ev = task.evaluation(args.eval_n)
            calib_path = work / f"{name}_calib.npz"
            np.savez(calib_path, **task.calibration(args.calib_n))
            dense_preds = task.predict(tasks.session(str(dense_path)), ev)
            dense = task.score(dense_preds, ev, dense_preds)["score"]
            eval_path = work / f"{name}_eval.pkl"
            with open(eval_path, "wb") as fh:
                pickle.dump((ev, dense_preds), fh)
            print(f"# {name}: {ev.info}; dense {task.metric} {dense:.2f}", file=sys.stderr, flush=True)
            for cname, kwargs in configs.items():
                row = {"model": name, "metric": task.metric, "higher_is_better": task.higher_is_better,
                       "reference": task.reference, "dense": dense, "config": cname, "kwargs": kwargs,
                       "eval": ev.info, "calib_n": args.calib_n, "levels": {}}
                results.append(row)
                oom = None  # calibration memory and time hardly depend on the level: one blow-up is enough
                for lv in levels:
                    key = (name, cname, str(lv))
                    if f"{name}:{cname}" in skip:
                        res = {"error": "skipped (--skip)"}
                    elif key in done:
                        res = done[key]
                    elif oom is not None:
                        res = {"error": f"not run after {oom}"}
                    else:
                        spec = {"model": name, "dense": str(dense_path), "calib": str(calib_path),
                                "eval": str(eval_path), "level": lv, "kwargs": kwargs, "rounds": args.rounds,
                                "tag": f"{name}_{cname}_{lv:g}"}
                        res = run_one(spec, work, args.mem_gb, args.timeout)
                        if res.get("error", "").startswith(("out of memory", "timeout")):
                            oom = f"{res['error'].split(' (')[0].split(' after')[0]} at {lv:g}"
                    row["levels"][str(lv)] = res
                    save()
                    print(f"  {name} {cname} {lv:g}: {fmt_cell(res, dense, task.higher_is_better)}",
                          file=sys.stderr, flush=True)
    print(f"onnxprune at {rev}; {args.calib_n} calibration samples; cells: task score (points vs dense) · "
          f"MACs kept · latency pruned/dense (ORT CPU, 1 thread, median of {args.rounds} interleaved pairs of best-of-several runs); "
          f"memory cap {args.mem_gb:g} GB per run; {time.time() - started:.0f} s.\n")
    print(table(results, levels))
    return 0


def _measured(path: str | None) -> dict[tuple[str, str, str], dict]:
    """Cells of an earlier --json that succeeded, keyed (model, config, level), for --resume."""
    if not path or not Path(path).is_file():
        return {}
    old = json.loads(Path(path).read_text())
    return {(r["model"], r["config"], lv): res for r in old["results"] for lv, res in r["levels"].items()
            if "error" not in res}


def _revision(onnxprune_module) -> str:
    """Commit of the checkout that holds the measured onnxprune ('+dirty' with uncommitted library changes)."""
    root = Path(onnxprune_module.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "onnxprune"], capture_output=True,
                               text=True, check=True).stdout.strip()
        lib = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h", "--", "onnxprune"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"{root.name}@{head} (onnxprune/ last changed in {lib})" + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return str(root)


if __name__ == "__main__":
    sys.exit(main())
