"""`onnxprune search` on a real model: serial against 2 local workers against Ray, the same front?

    .venv/bin/python tools/bench_search.py --runs serial,local2,ray2 --json search_bench.json

Each run is a fresh search (same model, data, budget and seed) in WORK/RUN: `serial` is one local
worker process, `localK` K local worker processes, `rayK` a local Ray instance of K CPUs (`--ray
local`). Per run it records the wall time of the fidelity-bound part (pruning, quantization and
fidelity in the workers: the executor's `run`), the whole search, the load average before and after
(the machine is shared: read times next to it), the front, and a sha256 of every candidate model.
Every candidate is checked: the ONNX checker, an ONNX Runtime run on an evaluation image, finite
outputs of the dense model's shapes. The front of the first run is scored by the task metric (face F1
against dense for NudeNet, tools/tasks.py). Results are appended to --json after each run, so runs can
be made one command at a time and compared at the end (`--report`). `--retime` times the runs of
--json again with the search code as it is now (each search resumed, nothing re-pruned).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tasks  # noqa: E402

from onnxprune.search import search  # noqa: E402
from onnxprune.search.executors import LocalExecutor, RayExecutor  # noqa: E402


POINT_KEYS = ("label", "depth_removed", "latency_ratio", "latency_noise", "latency_ratio_fastest", "latency_rounds",
              "macs", "params",
              "quality")


class Timed:
    """An executor that records how long its `run` took (the fidelity-bound part of a search)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def run(self, jobs, evaluate):
        start = time.perf_counter()
        try:
            return self.inner.run(jobs, evaluate)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self):
        self.inner.close()


def prepare(task: tasks.Task, work: Path, calib_n: int) -> tuple[str, str, str]:
    """The task's model, calibration set and evaluation images as files (written once)."""
    paths = work / "model.onnx", work / "calib.npz", work / "eval.npz"
    if not all(p.exists() for p in paths):
        work.mkdir(parents=True, exist_ok=True)
        onnx.save(task.model(), paths[0])
        np.savez(paths[1], **task.calibration(calib_n))
        feeds = task.evaluation().feeds
        np.savez(paths[2], **{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    return tuple(map(str, paths))


def executor_for(run: str):
    if run == "serial":
        return LocalExecutor(1)
    if run.startswith("local"):
        return LocalExecutor(int(run[5:]))
    if run.startswith("ray"):
        return RayExecutor("local", int(run[3:]))
    raise SystemExit(f"unknown run {run!r}: serial, localK or rayK")


def check_models(folder: Path, dense_path: str, eval_path: str, candidates: list[dict]) -> list[str]:
    """What is wrong with each candidate model (empty: all valid)."""
    from onnxprune.load.runtime import session

    feed = {k: v[:1] for k, v in np.load(eval_path).items()}
    dense_shapes = [o.shape for o in session(dense_path).run(None, feed)]
    problems = []
    for c in candidates:
        path = str(folder / c["model_file"])
        try:
            onnx.checker.check_model(path)
            outs = session(path).run(None, feed)
            if [o.shape for o in outs] != dense_shapes or not all(np.isfinite(o).all() for o in outs):
                problems.append(f"{c['id']}: outputs differ in shape or are not finite")
        except Exception as exc:  # noqa: BLE001  (any failure is a finding)
            problems.append(f"{c['id']}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return problems


def task_scores(task: tasks.Task, folder: Path, dense_path: str, ids: list[str]) -> dict[str, float]:
    ev = task.evaluation()
    dense = task.predict(tasks.session(dense_path), ev)
    return {cid: task.score(task.predict(tasks.session(str(folder / f"{cid}.onnx")), ev), ev, dense)["score"]
            for cid in ids}


def one_run(args, run: str, task: tasks.Task, files: tuple[str, str, str]) -> dict:
    out = Path(args.work) / run
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    executor = Timed(executor_for(run))
    try:
        done = search(files[0], files[1], out, budget=args.budget, data=files[2], seed=args.seed,
                      rounds=args.rounds, workers=executor, space=args.space)
    finally:
        executor.close()
    total = time.perf_counter() - start
    folder = out / "candidates"
    by_id = {c["id"]: c for c in done["candidates"]}
    row = {"run": run, "budget": args.budget, "seed": args.seed, "calib_n": args.calib_n,
           "space": done["settings"]["space"], "depth_levels": done["depth_levels"],
           "fidelity_seconds": round(executor.seconds, 1), "total_seconds": round(total, 1),
           "load_before": [round(x, 1) for x in load_before], "load_after": [round(x, 1) for x in os.getloadavg()],
           "cpus": os.cpu_count(), "front": done["front"], "failed": done["failed"],
           "candidates": len(done["candidates"]),
           "invalid": check_models(folder, files[0], files[2], done["candidates"]),
           "sha256": {c["id"]: hashlib.sha256((folder / c["model_file"]).read_bytes()).hexdigest()[:16]
                      for c in done["candidates"]},
           "timing_noise": done.get("timing_noise"), "tie_width": done.get("tie_width"),
           "points": {cid: {k: by_id[cid].get(k) for k in POINT_KEYS} for cid in by_id}}
    if args.task_metric:
        row["task_metric"] = {"name": task.metric, "front": task_scores(task, folder, files[0], done["front"])}
    return row


def retime(args, row: dict, task: tasks.Task, files: tuple[str, str, str]) -> dict:
    """The run's search timed again by the search code as it is now: its candidates' latencies are
    dropped and the search resumed (nothing is pruned or scored again; its models stay byte for byte),
    so a change to the timing or the front rule can be measured on the runs already made."""
    out = Path(args.work) / row["run"]
    for path in (out / "candidates").glob("c*.json"):
        point = json.loads(path.read_text())
        for key in [k for k in point if k.startswith("latency_")]:
            del point[key]
        path.write_text(json.dumps(point, indent=1))
    load_before = os.getloadavg()
    done = search(files[0], files[1], out, budget=args.budget, data=files[2], seed=args.seed, rounds=args.rounds,
                  workers=LocalExecutor(1), space=row.get("space"))
    by_id = {c["id"]: c for c in done["candidates"]}
    row.update(front=done["front"], timing_noise=done["timing_noise"], tie_width=done["tie_width"],
               retimed={"load_before": [round(x, 1) for x in load_before],
                        "load_after": [round(x, 1) for x in os.getloadavg()]},
               points={cid: {k: by_id[cid].get(k) for k in POINT_KEYS} for cid in by_id})
    if args.task_metric:
        row["task_metric"] = {"name": task.metric, "front": task_scores(task, out / "candidates", files[0], done["front"])}
    return row


def report(results: list[dict]) -> None:
    base = next((r for r in results if r["run"] == "serial"), results[0])
    print(f"| run | fidelity part (s) | vs {base['run']} | whole search (s) | load before / after (1 min) "
          f"| candidates | front | invalid | same models | same front |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        same_models = r["sha256"] == base["sha256"]
        print(f"| {r['run']} | {r['fidelity_seconds']:.0f} | {r['fidelity_seconds'] / base['fidelity_seconds']:.2f}x "
              f"| {r['total_seconds']:.0f} | {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} "
              f"| {r['candidates']} | {len(r['front'])} | {len(r['invalid'])} | {'yes' if same_models else 'NO'} "
              f"| {'yes' if r['front'] == base['front'] else 'no: ' + ','.join(r['front'])} |")
    for r in results:
        if r.get("tie_width") is not None:
            again = f", re-timed at load {r['retimed']['load_before'][0]:.1f} / {r['retimed']['load_after'][0]:.1f}" \
                if "retimed" in r else ""
            print(f"\n{r['run']}: timing noise {r['timing_noise']:.4f}, tie width {r['tie_width']:.4f}{again}; "
                  f"front {' '.join(r['front'])}", end="")
    print(f"\n\nfront of {base['run']}:")
    scores = base.get("task_metric", {}).get("front", {})
    for cid in base["front"]:
        p = base["points"][cid]
        extra = f"  {base['task_metric']['name']} {scores[cid]:.1f}" if cid in scores else ""
        print(f"  {cid} {p['label']:<33} latency {p['latency_ratio']:.3f}  MACs {p['macs']:.3f}  "
              f"params {p['params']:.3f}  quality {p['quality']:.4f}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nudenet_320n", help="a task name from tools/tasks.py")
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--calib-n", type=int, default=16, help="calibration images")
    ap.add_argument("--space", help="the search's dimensions (onnxprune search --space; default: all)")
    ap.add_argument("--runs", default="serial,local2,ray2", help="comma-separated: serial, localK, rayK")
    ap.add_argument("--work", default="/tmp/bench_search", help="folder for the data and the searches")
    ap.add_argument("--json", default="search_bench.json", help="results, appended run by run")
    ap.add_argument("--task-metric", action="store_true", help="score the front by the task metric")
    ap.add_argument("--report", action="store_true", help="only print the table of --json")
    ap.add_argument("--retime", action="store_true", help="time the runs of --json again (resumed searches, "
                                                          "nothing re-pruned) with the current timing and front rule")
    args = ap.parse_args()
    results = json.loads(Path(args.json).read_text()) if Path(args.json).exists() else []
    if not args.report:
        task = tasks.get(args.model)
        files = prepare(task, Path(args.work) / "data", args.calib_n)
        for run in args.runs.split(","):
            if args.retime:
                results = [retime(args, r, task, files) if r["run"] == run else r for r in results]
                Path(args.json).write_text(json.dumps(results, indent=1))
                continue
            results = [r for r in results if r["run"] != run] + [one_run(args, run, task, files)]
            Path(args.json).write_text(json.dumps(results, indent=1))
            print(f"# {run} done: fidelity part {results[-1]['fidelity_seconds']} s", file=sys.stderr, flush=True)
    report(results)


if __name__ == "__main__":
    main()
