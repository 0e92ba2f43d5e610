"""`onnxprune search`: many pruned candidates, their fidelity in parallel, their latency one at a time,
and the Pareto front of latency against quality.

Layout of the output folder (the search resumes from it: a finished candidate is never redone):

    DIR/search.json            the settings; a second run with other settings is refused
    DIR/candidates/cNNN.onnx   each candidate's model
    DIR/candidates/cNNN.json   its spec, MACs, params, fidelity, quality and (once timed) latency
    DIR/pareto.json            the front (schema onnxprune.pareto/1) and every candidate
    DIR/pareto.png             the front (with matplotlib)

Fidelity work fans out over worker processes (`workers`) or Ray tasks (executors.py); the executor is
then closed and latency measured in this process, every candidate against the dense model in one
interleaved pass (timing.py), so that all timings come from one machine and share its noise; the
front treats latencies within that noise as ties (front.py), so that it does not depend on which
executor ran the candidates. A worker
that dies loses only its candidate, which is retried once.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import onnx

from onnxprune.errors import BadInputError
from onnxprune.search.executors import Executor, LocalExecutor
from onnxprune.search.front import TIE_FLOOR, TIE_K, pareto_front, plot_front, tie_width
from onnxprune.search.metric import load_metric, score as score_metric
from onnxprune.search.depth_levels import depth_levels
from onnxprune.search.space import candidates, parse_space
from onnxprune.search.timing import pass_noise, summarize, time_until_quiet

PARETO_SCHEMA = "onnxprune.pareto/1"
FRONT_RULE = ("latency_ratio: median over rounds of the candidate's time over the dense model's in the same "
              "round, all candidates timed in one interleaved pass; timing_noise: the median over candidates of "
              "the standard error of that median; a point is off the front when another has quality at least as "
              "high and latency lower by more than tie_width, or latency within tie_width and higher quality; "
              f"tie_width = max({TIE_K:g} x sqrt(2) x timing_noise, {TIE_FLOOR:g})")


def search(model: str, calib: str, out_dir: str | os.PathLike, budget: int = 16, data: str | None = None,
           workers: int | Executor = 1, seed: int = 0, space: str | Sequence[str] | None = None,
           input_shapes: dict | None = None, rounds: int = 40, evaluate: Callable[[dict], dict] | None = None,
           metric: str | None = None) -> dict:
    """Run (or resume) a search; returns the pareto.json document. `evaluate(job) -> summary` makes
    and scores one candidate in a worker (default `evaluate_candidate`; a picklable function).
    `workers`: that many local worker processes, or an Executor (`RayExecutor` for Ray).
    `space`: the dimensions explored (space.DIMENSIONS, all by default; "targets,scopes" leaves depth
    and int8 out). `metric`: a user's task metric, `module:function` or `file.py:function` (search/metric.py)."""
    count = workers if isinstance(workers, int) else 1
    if budget < 1 or count < 1 or rounds < 1:
        raise BadInputError(f"search: --budget, --workers and --rounds must be at least 1 "
                            f"(got {budget}, {count}, {rounds})")
    out = Path(out_dir)
    dimensions = parse_space(space)
    settings = {"model": os.path.abspath(model), "calib": os.path.abspath(calib),
                "data": os.path.abspath(data) if data else None, "budget": budget, "seed": seed,
                "space": list(dimensions)}
    if metric:  # found before any work; recorded, so a resumed search scores with the same metric
        load_metric(metric)
        settings["metric"] = metric
    _claim_folder(out, settings)
    depths = depth_levels(settings["model"], settings["calib"], input_shapes) if "depth" in dimensions else []
    specs = candidates(budget, seed, int8="int8" in dimensions, depths=depths, scopes="scopes" in dimensions)
    jobs = [{"model": settings["model"], "calib": settings["calib"], "data": settings["data"], "spec": spec,
             "out": str(out / "candidates"), "input_shapes": input_shapes, "metric": metric} for spec in specs
            if not (out / "candidates" / f"{spec['id']}.json").exists()]
    executor = LocalExecutor(workers) if isinstance(workers, int) else workers
    failed = executor.run(jobs, evaluate or evaluate_candidate)
    executor.close()  # before timing: a local Ray instance's processes would share the cores with it
    points = [json.loads((out / "candidates" / f"{s['id']}.json").read_text()) for s in specs
              if (out / "candidates" / f"{s['id']}.json").exists()]
    _measure_latency(settings["model"], points, out / "candidates", rounds, input_shapes)
    noise = pass_noise(points)
    front = pareto_front(points, tie=tie_width(noise))
    document = {"schema": PARETO_SCHEMA, "model": settings["model"], "settings": settings,
                "depth_levels": [{"units": d.units, "macs_kept_at_most": d.macs_kept_most} for d in depths],
                "front": [p["id"] for p in front], "front_rule": FRONT_RULE, "timing_noise": round(noise, 4),
                "tie_width": round(tie_width(noise), 4), "candidates": points, "failed": failed}
    if metric:
        document["dense_quality"] = score_metric(metric, settings["model"])
    _write_json(out / "pareto.json", document)
    if front:
        try:
            plot_front(points, front, str(out / "pareto.png"), Path(model).name)
        except ImportError:  # matplotlib is optional: the JSON holds every figure
            pass
    return document


def _claim_folder(out: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "candidates").mkdir(exist_ok=True)
    recorded = out / "search.json"
    if recorded.exists():
        try:
            before = json.loads(recorded.read_text())
        except ValueError:
            before = None
        if before != settings:
            raise BadInputError(f"{out}: holds a search with other settings ({recorded}); resume it with the same "
                                f"model, data, --budget, --seed and --space, or give a new -o folder")
    else:
        _write_json(recorded, settings)


def evaluate_candidate(job: dict) -> dict:
    """Prune (and quantize) one candidate, check it against the dense model on the evaluation data,
    write its model and summary beside the others. Runs in a worker process, one thread."""
    from onnxprune.api import prune
    from onnxprune.check.gates import worst_output
    from onnxprune.check.validate import validate_pair
    from onnxprune.graph.cost import count_macs, count_params
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load.model import load_model, save_model_atomic
    from onnxprune.passes import PassContext, Quantize

    spec, folder = job["spec"], Path(job["out"])
    dense = load_model(job["model"])
    result = prune(dense, calib=job["calib"], eval_data=job["data"], input_shapes=job["input_shapes"],
                   bench_rounds=0, threads=1, **spec["prune"])
    model = result.model
    context = PassContext(dense=dense, calib=job["calib"], data=job["data"], input_shapes=job["input_shapes"])
    if spec["int8"]:
        model = Quantize()(model, context).model
    fidelity = validate_pair(dense, model, context.evaluation_data(), threads=1)["fidelity"]
    graph, dense_graph = ModelGraph(model, job["input_shapes"]), ModelGraph(dense, job["input_shapes"])
    accuracy = fidelity.get("accuracy_pruned")
    summary = {"id": spec["id"], "label": spec["label"], "spec": spec, "model_file": f"{spec['id']}.onnx",
               "macs": count_macs(graph) / max(count_macs(dense_graph), 1),
               "params": count_params(graph) / max(count_params(dense_graph), 1),
               "fidelity": fidelity, "quality": accuracy if accuracy is not None else worst_output(fidelity)[1],
               "quality_name": "accuracy" if accuracy is not None else "cosine (worst output or part)",
               "plan": result.report.get("plan", {}).get("per_group", [])}
    if "depth" in result.report:  # the residual units this candidate's depth stage removed
        summary["depth_removed"] = [row["name"] for row in result.report["depth"]["removed"]]
    save_model_atomic(model, folder / summary["model_file"], force=True)
    if job.get("metric"):  # the user's task metric ranks the front instead
        summary["quality"] = score_metric(job["metric"], str(folder / summary["model_file"]))
        summary["quality_name"] = job["metric"]
    _write_json(folder / f"{spec['id']}.json", summary)
    return summary


def _measure_latency(model: str, points: list[dict], folder: Path, rounds: int, input_shapes: dict | None) -> None:
    """Every candidate against the dense model in one interleaved pass (search/timing.py), unless all
    were timed already (a resumed search keeps its figures): candidates timed in one pass share its
    noise, so their ratios compare; a new candidate re-times them all."""
    from onnxprune.graph.model_graph import resolve_input_shapes
    from onnxprune.load.data import synthetic_dataset
    from onnxprune.load.runtime import session

    if not points or all("latency_ratio" in p and "latency_noise" in p for p in points):
        return
    dense_model = onnx.load(model)
    dense = session(dense_model)
    feed = next(synthetic_dataset(dense, resolve_input_shapes(dense_model, input_shapes), samples=1).batches(1))
    sessions = [dense] + [session(str(folder / p["model_file"])) for p in points]
    for point, timing in zip(points, summarize(time_until_quiet(sessions, feed, rounds))):
        point.update(timing)
        _write_json(folder / f"{point['id']}.json", point)


def _write_json(path: Path, document: dict) -> None:
    """Atomically (temporary file and rename): a search killed mid-write resumes from whole files."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(document, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
