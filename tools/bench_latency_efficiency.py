#!/usr/bin/env python3
"""Speed-up per MAC removed: a MACs target against a latency target (the measured latency model).

    python tools/bench_latency_efficiency.py --models light_resnet50,light_squeezenet --target 0.5
    python tools/bench_latency_efficiency.py --models survey:anime_or_not,path/to/model.onnx \
        --shape "input=1x3x224x224"

For each model (zoo names and task models, fetched and cached; `survey:KEY` for an export of
tools/survey_exports.py, with the input shapes its entry gives; `arch:NAME` for a random-weight export
of tools/make_arch_exports.py; or a path to an .onnx file), two prunings without data (l2, global scope):
- `target_macs=T`: the MACs cost model decides;
- `target_latency=T`: the per-node latency table decides (select/latency_model.py), searched and
  corrected by measurement inside onnxprune.
Each pruned model is then re-timed here against the dense model: interleaved pairs, each side the
fastest of a few back-to-back runs, median of per-pair ratios, one session each with --threads.
efficiency = (dense latency / pruned latency) / (dense MACs / pruned MACs): 1.0 means time falls
exactly as fast as MACs; above 1, faster than the MACs promise. A latency target writes LRN as a band
Conv (graph/lrn_band.py), which alone runs faster than ONNX Runtime's LRN: for those models the
table also gives the efficiency against the dense model with the same rewrite (latency paired
against it, MACs against its MACs), the part of the speed-up that pruning made. `--depth K` removes K
residual units before the latency target's widths (the target stays a fraction of the model as
given); `--task` scores each pruned model on its task (tools/tasks.py) where one exists; the cosine
is the report's, on synthetic inputs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import onnxprune  # noqa: E402
from bench_target_latency import make_session, paired_ratio  # noqa: E402
from benchlib import revision  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.lrn_band import lrn_as_band  # noqa: E402
from onnxprune.load.fold import fold_constants  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402

DEFAULT_MODELS = "light_resnet50,light_densenet121,light_inception_v1,light_squeezenet,light_shufflenet,nudenet_320n,ppocr_det"


def paired(dense: onnx.ModelProto, pruned: onnx.ModelProto, threads: int, pairs: int, shapes=None) -> float:
    """bench_target_latency's paired measurement (sessions without spinning, fastest of 3 per side)."""
    sd, sp = make_session(dense, threads), make_session(pruned, threads)
    feed = next(synthetic_dataset(session(dense), ModelGraph(dense, shapes).input_shapes, samples=1).batches(1))
    return paired_ratio(sd, sp, feed, pairs)["ratio"]


def rewritten_efficiency(dense: onnx.ModelProto, pruned: onnx.ModelProto, threads: int, pairs: int,
                         shapes=None) -> float | None:
    """Efficiency against the dense model with the same rewrite a latency target makes (LRN as a band
    Conv, graph/lrn_band.py), so that the rewrite's own speed-up is not counted; None without LRN."""
    rewritten, count = lrn_as_band(fold_constants(dense))
    if not count:
        return None
    latency = paired(rewritten, pruned, threads, pairs, shapes)
    return (1 / latency) / (count_macs(ModelGraph(rewritten, shapes)) / count_macs(ModelGraph(pruned, shapes)))


def one(name: str, target: float, threads: int, pairs: int, kinds: tuple[str, ...] = ("macs", "latency"),
        depth: int = 0, task: bool = False, shapes: dict | None = None, round_to: int | None = None) -> list[dict]:
    dense, shapes = load_dense(name, shapes)
    dense_macs = count_macs(ModelGraph(dense, shapes))
    rows = []
    for kind in (f"target_{k}" for k in kinds):
        t0 = time.time()
        extra = {"depth": depth} if depth and kind == "target_latency" else {}
        extra.update({"input_shapes": shapes} if shapes else {}, **({"round_to": round_to} if round_to else {}))
        result = onnxprune.prune(dense, criterion="l2", scope="global", recover="none", bench_rounds=0,
                                 threads=threads, **{kind: target}, **extra)
        seconds = time.time() - t0
        macs = count_macs(ModelGraph(result.model, shapes)) / dense_macs
        latency = paired(dense, result.model, threads, pairs, shapes)
        same = rewritten_efficiency(dense, result.model, threads, pairs, shapes) if kind == "target_latency" else None
        label = f"{kind.replace('target_', '')} {target:g}" + (f", depth {depth}" if extra else "")
        rows.append({"model": name, "target": label, "macs": macs,
                     "latency": latency, "efficiency": (1 / latency) / (1 / macs), "seconds": seconds,
                     "same_rewrite": same, "cosine": result.report["fidelity"].get("cosine"),
                     "task": task_score(name, dense, result.model) if task else None,
                     "removed_units": [u["name"] for u in result.report.get("depth", {}).get("removed", [])],
                     "predicted": result.report["plan"].get("latency", {}).get("predicted_latency_ratio"),
                     "load": os.getloadavg()[0],
                     "attempts": result.report["plan"].get("latency", {}).get("latency_attempts")})
    return rows


def load_dense(name: str, shapes: dict | None = None) -> tuple[onnx.ModelProto, dict | None]:
    """The model and its input shapes (`shapes` when given, else the survey entry's, else None: the
    model's own, symbolic dims resolved by ModelGraph). A zoo model (onnxprune/load/zoo.py);
    `survey:KEY`, an export of tools/survey_exports.py; `arch:NAME`, a random-weight export of
    tools/make_arch_exports.py (built beforehand with torch); an existing .onnx path; else the model of a
    task (tools/tasks.py, tasks_extra.py: real exports, read out of their wheels)."""
    if name in zoo.MODELS or zoo.is_light(name):
        return onnx.load(zoo.fetch(name)), shapes
    if name.startswith("survey:"):
        import survey_exports
        entry = survey_exports.BY_KEY.get(name[len("survey:"):])
        if entry is None:
            raise SystemExit(f"unknown survey model {name!r} (python tools/survey_exports.py --list)")
        given = {k: tuple(v) for k, v in entry.input_shapes.items()} or None
        return onnx.load(str(survey_exports.model_path(entry))), shapes or given
    if name.startswith("arch:"):
        import make_arch_exports
        return onnx.load(str(make_arch_exports.arch_path(name[len("arch:"):]))), shapes
    if name.endswith(".onnx"):
        if not Path(name).is_file():
            raise SystemExit(f"no such model file: {name}")
        return onnx.load(name), shapes
    import tasks
    return tasks.get(name).model(), shapes


def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]] | None:
    """`--shape "a=1x3x224x224;b=1x8"` -> {"a": (1, 3, 224, 224), "b": (1, 8)}; None for none given."""
    if not text:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, sep, dims = part.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ValueError(f"bad --shape {part!r}: expected NAME=1x3x224x224")
        out[name] = shape
    return out


def task_score(name: str, dense: onnx.ModelProto, pruned: onnx.ModelProto) -> str | None:
    """The pruned model's task metric against the dense model's predictions (tools/tasks.py), for the
    models that have a task; None for the others (the light zoo's weights are constant-filled)."""
    import tasks
    if name not in tasks.all_tasks():
        return None
    task = tasks.get(name)
    ev = task.evaluation()
    dense_preds = task.predict(tasks.session(dense), ev)
    score = task.score(task.predict(tasks.session(pruned), ev), ev, dense_preds)["score"]
    return f"{task.metric} {score:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--kinds", default="macs,latency", help="which targets: macs, latency or both")
    ap.add_argument("--depth", type=int, default=0, help="residual units removed before the latency target's widths")
    ap.add_argument("--task", action="store_true", help="also score each pruned model on its task (tools/tasks.py)")
    ap.add_argument("--shape", help='input shapes for every model, "NAME=1x3x224x224;NAME2=1x8" (default: the '
                    "survey entry's, else the model's own with symbolic dims resolved)")
    ap.add_argument("--round-to", type=int, help="channel multiple of the pruned widths (default: onnxprune's)")
    args = ap.parse_args(argv)
    try:
        shapes = parse_shapes(args.shape)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    rows = []
    for name in args.models.split(","):
        kinds = tuple(args.kinds.split(","))
        rows += one(name, args.target, args.threads, args.pairs, kinds, args.depth, args.task, shapes, args.round_to)
        for r in rows[-len(kinds):]:
            print(r, file=sys.stderr, flush=True)
    print(f"Speed-up per MAC removed at {args.target:g}, l2 global, no data, {args.threads} threads, "
          f"{args.pairs} interleaved pairs; onnxprune {revision()}\n")
    print("| model | target | MACs kept | latency (paired) | predicted | efficiency | vs dense with the same rewrite "
          "| cosine | task | prune s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        predicted = f"{r['predicted']:.3f}" if r["predicted"] is not None else "-"
        same = f"{r['same_rewrite']:.2f}" if r.get("same_rewrite") is not None else "-"
        cosine = f"{r['cosine']:.4f}" if r.get("cosine") is not None else "-"
        print(f"| {r['model']} | {r['target']} | {r['macs']:.3f} | {r['latency']:.3f} | {predicted} | "
              f"{r['efficiency']:.2f} | {same} | {cosine} | {r.get('task') or '-'} | {r['seconds']:.0f} | {r['load']:.1f} |")
    for kind in ("macs", "latency"):
        values = [r["efficiency"] for r in rows if r["target"].startswith(kind)]
        if values:
            print(f"\nmedian efficiency, {kind} target: {np.median(values):.2f}", end="")
    same = [r["same_rewrite"] if r.get("same_rewrite") is not None else r["efficiency"]
            for r in rows if r["target"].startswith("latency")]
    if same:
        print(f"\nmedian efficiency, latency target, against dense with the same rewrite: {np.median(same):.2f}", end="")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
