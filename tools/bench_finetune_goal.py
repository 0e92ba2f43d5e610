#!/usr/bin/env python3
"""Issue 10's goal, measured: half the MACs, label-free distillation on 1024 unlabelled inputs, at most
5 epochs, scored on each model's task; the wall time of pruning and of fine-tuning per model.

    .venv/bin/python tools/bench_finetune_goal.py --model ddddocr_common --variants auto,1e-3,1e-4 [--json out.json]

Each model is pruned once (32 calibration samples, `--target-macs 0.5`, the pruned start named by --start:
the data-aware defaults, or one of STARTS) and the pruned model is cached under --work, so several
fine-tuning variants start from the same weights. A
variant is a learning rate ("auto": the range test of recover/lrfind.py, the default), optionally
followed by "+feat" or "+featW" (intermediate-feature distillation at weight W, default 1). Training data are
`--train` unlabelled samples rendered like the calibration set (digits: the fixture's training images),
disjoint from the evaluation set; the epoch kept is chosen on a held-out tenth of them (epoch 0
included), as `prune --finetune` does. The same as the command line:

    onnxprune prune MODEL -o OUT --target-macs 0.5 --calib CALIB.npz --train-data TRAIN.npz --finetune 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.api import prune  # noqa: E402
from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.options import PruneOptions, Target  # noqa: E402
from onnxprune.recover.finetune import finetune  # noqa: E402
from finetune_cases import STARTS, digits_case, task_case  # noqa: E402


def own_training(task_name: str) -> bool:
    """Whether the task makes training inputs of their own (`training(n)`: no source shared with its test set)."""
    import tasks
    return task_name != "digits" and hasattr(tasks.get(task_name), "training")


def train_inputs(task_name: str, n: int, source: str = "calibration") -> Dataset:
    """`n` unlabelled inputs of a task's calibration set (or of its `training` set), stacked per sample as
    task_case does."""
    import tasks
    task = tasks.get(task_name)
    data = task.training(n) if source == "training" else task.calibration(n)
    key = next(iter(data))
    rank = len(task.model().graph.input[0].type.tensor_type.shape.dim)
    return Dataset({key: data[key] if data[key].ndim == rank + 1 else data[key][:, None]})


def pruned(name: str, case, macs: float, work: Path, start: str = "default", calib_n: int = 32) -> tuple[onnx.ModelProto, float]:
    """The pruned model and the seconds pruning took (cached: later variants reuse both)."""
    tag = f"{name}_{macs}" if start == "default" else f"{name}_{macs}_{start}"
    tag += f"_calib{calib_n}" if calib_n != 32 else ""
    path, meta = work / f"{tag}.onnx", work / f"{tag}.json"
    if path.exists() and meta.exists():
        return onnx.load(str(path)), json.loads(meta.read_text())["prune_s"]
    dense, calib, _, _, shapes = case
    started = time.perf_counter()
    result = prune(dense, calib=calib, options=PruneOptions(target=Target(macs=macs), input_shapes=shapes,
                                                            bench_rounds=0, **STARTS[start]))
    seconds = round(time.perf_counter() - started, 1)
    onnx.save(result.model, str(path))
    meta.write_text(json.dumps({"prune_s": seconds}))
    return result.model, seconds


DISTILL = {"mse": "mse", "bal": "balanced", "kl": "kl", "det": "detect"}  # variant suffix -> TrainSettings.distill
AUGMENT = {"aug": ("flip", "crop", "scale"), "augcs": ("crop", "scale")}  # variant suffix -> augment (augcs: no flip, for digits)
SELECT = {"agree": "agreement", "parts": "parts", "conf": "confident"}  # variant suffix -> TrainSettings.select


def variant(spec: str) -> dict:
    """"RATE[+featW][+probs][+aug][+mse|+bal|+det|+kl][+swW][+fgW][+tT][+bB][+last]": probs distills the output probabilities
    (the old default), not the logits a final Softmax reads; aug adds flip, crop and scale jitter, augcs crop and scale only; mse distills by
    squared error (outputs that are not class scores: a detector's boxes), bal by squared error balanced per
    channel (recover/distill_weights.py), det by the detect loss (autodiff/detect_loss.py), kl by KL; none of the three: the library's default;
    swW (det) the score rows' term at weight W, fgW (det) the score rows' confident-anchor term at weight W; tT the distillation
    temperature T (default 2); bB batch B instead of --batch; wN N warm-up steps; lrw the range test ramps its rates up (lrfind.py); seedN the shuffling seed (default 0); last keeps the last epoch, not the best held-out one;
    agree keeps the epoch of best held-out top-1 agreement with the teacher, parts the best worst-part cosine, conf the
    best confident-anchor F1 (recover/epoch_measures.py; all three are recorded in every run, see `kept`)."""
    rate, *extras = spec.split("+")
    feat = next((e for e in extras if e.startswith("feat")), None)
    temp = next((float(e[1:]) for e in extras if e.startswith("t") and e[1:]), None)
    batch = next((int(e[1:]) for e in extras if e.startswith("b") and e[1:].isdigit()), None)
    seed = next((int(e[4:]) for e in extras if e.startswith("seed") and e[4:].isdigit()), None)
    warmup = next((int(e[1:]) for e in extras if e.startswith("w") and e[1:].isdigit()), None)
    detect = {key: float(e[2:]) for e in extras for tag, key in (("sw", "score_weight"), ("fg", "score_focus"))
              if e.startswith(tag) and e[2:]}
    return {"lr": None if rate == "auto" else float(rate),
            "features": float(feat[len("feat"):] or 1.0) if feat else 0.0,
            "softmax_logits": "probs" not in extras, "augment": AUGMENT.get(next((e for e in extras if e in AUGMENT), ""), ()),
            **({"distill": DISTILL[e] for e in extras if e in DISTILL}), "keep": "last" if "last" in extras else "best",
            "select": next((SELECT[e] for e in extras if e in SELECT), "fidelity"),
            **({"temperature": temp} if temp else {}), **({"batch_size": batch} if batch else {}),
            **({"seed": seed} if seed is not None else {}), **({"warmup_steps": warmup} if warmup is not None else {}),
            **({"lr_test_warmup": True} if "lrw" in extras else {}),
            **detect}


class EpochScores:
    """Scores every epoch's weights on the task (after the loop's end-of-epoch save), so that any rule that
    picks an epoch from the held-out history can be judged on the task from one run (`--score-epochs`)."""

    def __init__(self, model, score):
        self.model, self.score, self.scores = model, score, []

    def __enter__(self):
        from onnxprune.autodiff.weights import write_weights
        from onnxprune.recover import trainloop
        self.saved, original = trainloop.Loop._save, trainloop.Loop._save

        from onnxprune.apply.qdq_lower import lower
        from onnxprune.load.qdq_lift import lift
        lifted_model, lifted = lift(self.model)  # a QDQ model trains its weights lifted (recover/finetune.py)

        def save_and_score(loop):
            original(loop)
            weights = {n: loop.params.values[n] for n in loop.params.names}
            scored = write_weights(lifted_model, weights)
            self.scores.append(round(self.score(lower(scored, lifted, lambda t, a: None) if lifted else scored), 2))
            print(f"epoch {len(self.scores)}: task score {self.scores[-1]}", flush=True)
        trainloop.Loop._save = save_and_score
        return self

    def __exit__(self, *exc):
        from onnxprune.recover import trainloop
        trainloop.Loop._save = self.saved


def run_variant(model, case, spec: str, epochs: int, batch: int, score_epochs: bool = False,
                save: Path | None = None, guard: bool = True) -> dict:
    """The same as `prune --calib --train-data --finetune` (api.prune: the calibration data guard the epoch
    kept; `guard` False: not) with the variant's settings; `save`: a folder the trained model is written to
    (VARIANT.onnx, for tools/diag_output_parts.py and the like)."""
    from onnxprune.stages import as_dataset
    dense, calib, train, score, _ = case
    v = {"batch_size": batch, **variant(spec)}
    started = time.perf_counter()
    with EpochScores(model, score) if score_epochs else nullcontext() as scored:
        res = finetune(model, train, epochs, teacher=dense, progress=False,
                       guard_data=as_dataset(calib, dense) if guard else None, **v)
    trained, info = res.model, {"history": res.history, "lr": res.lr, "best_epoch": res.best_epoch}
    seconds = round(time.perf_counter() - started, 1)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        onnx.save(trained, str(save / f"{spec.replace('+', '_')}.onnx"))
    trials = info["history"][0].get("lr_trials")
    return {"variant": spec, "score": round(score(trained), 2), "finetune_s": seconds, "lr": info["lr"],
            "load_1min": round(os.getloadavg()[0], 1),
            "best_epoch": info["best_epoch"], "lr_trials": trials, "distill": res.distill,
            "trained_weights": len(res.trainable), "frozen_weights": len(res.frozen), "feature_points": len(res.features),
            "val_loss": [h.get("val_loss") for h in info["history"]],
            "val_agreement": [h.get("val_agreement") for h in info["history"]],
            "val_exact": [h.get("val_exact") for h in info["history"]],
            "val_parts": [h.get("val_parts") for h in info["history"]],
            "val_confident": [h.get("val_confident") for h in info["history"]],
            "guard_loss": [h.get("guard_loss") for h in info["history"]],
            "guard_agreement": [h.get("guard_agreement") for h in info["history"]],
            "kept": kept_by_rule(info["history"]),
            **({"epoch_scores": scored.scores} if scored else {})}


def kept_by_rule(history: list[dict]) -> dict:
    """The epoch each label-free selection rule would keep from this run's held-out history (epoch 0 included),
    without the guard; `guarded`: fidelity among the epochs the guard allows (trainloop.eligible), as kept."""
    from onnxprune.recover.trainloop import SELECT_KEYS, eligible, score
    rules = {"fidelity": (False, None), "agreement": (True, None), **{k: (False, v) for k, v in SELECT_KEYS.items()}}
    kept = {rule: max(range(len(history)), key=lambda e: (score(history[e], False, agree, key), -e))
            for rule, (agree, key) in rules.items()}
    allowed = [e for e in range(len(history)) if e == 0 or eligible(history[e], history[0])]
    return {**kept, "guarded": max(allowed, key=lambda e: (score(history[e], False), -e))}


def range_test(model, case, batch: int, spec: str = "auto") -> dict:
    """Only the learning-rate range test that `auto` runs before epoch 1 (recover/lrfind.py): the rate it
    chooses and each rate's held-out loss. A run given that rate as lr trains identically to `auto`, so
    an `auto` row equals the fixed-rate row of the rate chosen here."""
    dense, _, train, _, _ = case
    started = time.perf_counter()
    res = finetune(model, train, 1, teacher=dense, progress=False, **{"batch_size": batch, **variant(spec)}, minutes=1e-4)
    first = res.history[0]
    return {"variant": "range-test" + spec[len("auto"):], "lr": first.get("lr"), "lr_trials": first.get("lr_trials"),
            "seconds": round(time.perf_counter() - started, 1), "load_1min": round(os.getloadavg()[0], 1)}


def table(path: str) -> str:
    """The Markdown table of every run appended to a --json file."""
    lines = ["| model | start | dense | pruned | variant | lr | kept epoch | after | vs dense | prune s | fine-tune s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in Path(path).read_text().splitlines():
        run = json.loads(line)
        if run["rows"] and run["rows"][0]["variant"].startswith("range-test"):
            continue
        if not run["rows"]:  # a prune-only line (--variants none)
            lines.append(f"| {run['model']} | {run.get('start', 'default')} | {run['dense']:.2f} | {run['pruned']:.2f} | "
                         f"none | | | | {run['pruned'] - run['dense']:+.2f} | {run['prune_s']} | | {run['load']:.1f} |")
        for r in run["rows"]:
            source = f"{run['train_from']} " if run.get("train_from") else ""
            lines.append(f"| {run['model']} ({run['train']} {source}samples, {run['epochs']} epochs) | {run.get('start', 'default')} | "
                         f"{run['dense']:.2f} | {run['pruned']:.2f} | {r['variant']} | {r['lr']:g} | {r['best_epoch']} | "
                         f"{r['score']:.2f} | {r['score'] - run['dense']:+.2f} | {run['prune_s']} | {r['finetune_s']} | "
                         f"{r.get('load_1min', run.get('load', ''))} |")
    return "\n".join(lines)


def selection_table(path: str) -> str:
    """Per run with --score-epochs: the task score of every epoch, and the epoch each selection rule keeps
    (`kept`) with its score: which label-free rule follows the task."""
    rules = ("fidelity", "agreement", "parts", "confident", "guarded")  # guarded: fidelity within the guard (s15 on)
    lines = ["| model, training inputs | variant | task score, epochs 0.. | worst part cosine, epochs 0.. | confident F1, epochs 0.. | "
             "guard KL, epochs 0.. | " + " | ".join(f"kept by {r}" for r in rules) + " |", "|---" * (6 + len(rules)) + "|"]
    for line in Path(path).read_text().splitlines():
        run = json.loads(line)
        for r in run["rows"]:
            if "epoch_scores" not in r or "kept" not in r:
                continue
            scores = [run["pruned"], *r["epoch_scores"]]
            if r.get("guard_loss") and r["guard_loss"][0] is not None:  # the guard's epoch by the current rule
                keys = ("val_loss", "val_agreement", "guard_loss", "guard_agreement")
                r["kept"]["guarded"] = kept_by_rule([{k: r[k][e] for k in keys if r[k][e] is not None}
                                                     for e in range(len(r["val_loss"]))])["guarded"]
            parts = [min(p) if p else None for p in r["val_parts"]]
            fmt = lambda xs: ", ".join("-" if x is None else f"{x:.4g}" for x in xs)  # noqa: E731
            lines.append(f"| {run['model']}, {run.get('train_from') or 'own'} | {r['variant']} | {fmt(scores)} | {fmt(parts)} | "
                         f"{fmt(r['val_confident'])} | {fmt(r.get('guard_loss') or [None])} | "
                         + " | ".join(f"{r['kept'][k]} ({scores[r['kept'][k]]:.2f})" if k in r['kept'] else "-"
                                      for k in rules) + " |")
    return "\n".join(lines)


def epoch_table(path: str) -> str:
    """Per scored run: the rate, the task score before training and after each epoch, the epoch kept and its
    score, and whether the guard let the best held-out epoch through (no: it kept an earlier one)."""
    lines = ["| model | variant | rate | start | task score, epochs 1.. | guard KL, epochs 0.. | kept epoch | kept score | "
             "guard kept best held-out? |", "|---|---|---|---|---|---|---|---|---|"]
    for line in Path(path).read_text().splitlines():
        run = json.loads(line)
        for r in run["rows"]:
            if "epoch_scores" not in r:
                continue
            scores, fidelity = [run["pruned"], *r["epoch_scores"]], r["kept"]["fidelity"]
            guard = ", ".join(f"{x:.3g}" for x in r.get("guard_loss") or [] if x is not None) or "-"
            lines.append(f"| {run['model']} | {r['variant']} | {r['lr']:g} | {run['pruned']:.2f} | "
                         f"{', '.join(f'{x:.2f}' for x in r['epoch_scores'])} | {guard} | {r['best_epoch']} | {r['score']:.2f} | "
                         f"{'yes' if r['best_epoch'] == fidelity else f'no ({fidelity}: {scores[fidelity]:.2f})'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits", help="digits, ppocr_cls, ddddocr_common, ppocr_rec, nudenet_320n")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, default=1024, help="unlabelled training samples")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-n", type=int, help="evaluation samples (default: the task harness's count)")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples the pruning reads (unlabelled)")
    ap.add_argument("--train-from", metavar="TASK", help="training inputs from this task's calibration set instead "
                    "(nudenet_320n_faces: photos with faces; the start and the scoring stay --model's)")
    ap.add_argument("--train-source", choices=("auto", "calibration"), default="auto", help="auto: the task's own "
                    "training inputs where it makes them (orientation tasks: no test photo among their sources), "
                    "else its calibration set")
    ap.add_argument("--start", default="default", choices=sorted(STARTS), help="the pruned start (see STARTS)")
    ap.add_argument("--variants", default="auto", help="comma-separated: auto, a rate (1e-4), with +feat, +aug, +t4, +b16, ... (see variant); none: prune only")
    ap.add_argument("--range-test", action="store_true", help="only run the learning-rate range test of `auto` "
                    "(the rate it picks on these inputs; no training)")
    ap.add_argument("--score-epochs", action="store_true", help="score every epoch's weights on the task too "
                    "(epoch_scores: epochs 1..E; epoch 0 is the pruned score), to judge epoch-selection rules")
    ap.add_argument("--no-guard", action="store_true", help="keep the epoch by held-out fidelity alone, not "
                    "guarded by the calibration data (the rule before session 15)")
    ap.add_argument("--work", default="/tmp/ft_goal", help="pruned models are cached here")
    ap.add_argument("--save", metavar="DIR", help="write each variant's trained model here (VARIANT.onnx)")
    ap.add_argument("--json", help="append every figure here (one JSON line per model)")
    ap.add_argument("--table", metavar="RUNS.jsonl", help="only print the Markdown table of the runs in this file")
    ap.add_argument("--selection-table", metavar="RUNS.jsonl", help="only print, per run with --score-epochs, each "
                    "epoch's task score and the epoch each selection rule keeps")
    ap.add_argument("--epoch-table", metavar="RUNS.jsonl", help="only print, per run with --score-epochs, the rate, "
                    "each epoch's task score, the epoch kept and whether the guard kept the best held-out one")
    a = ap.parse_args(argv)
    if a.table or a.selection_table or a.epoch_table:
        print(table(a.table) if a.table else selection_table(a.selection_table) if a.selection_table
              else epoch_table(a.epoch_table))
        return 0
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    source = "training" if a.train_source == "auto" and own_training(a.train_from or a.model) else "calibration"
    own_n = 1 if a.train_from or source == "training" else a.train  # replaced below: not rendered twice
    case = digits_case(a.train) if a.model == "digits" else task_case(a.model, own_n, a.eval_n, a.calib_n)
    if a.train_from or source == "training":
        case = (*case[:2], train_inputs(a.train_from or a.model, a.train, source), *case[3:])
    model, prune_s = pruned(a.model, case, a.macs, work, a.start, a.calib_n)
    dense_score, pruned_score = case[3](case[0]), case[3](model)
    print(f"{a.model} at {a.macs} of the MACs: dense {dense_score:.2f}, pruned {pruned_score:.2f} "
          f"(start {a.start}, pruning {prune_s} s), {len(case[2])} unlabelled samples, {a.epochs} epochs", flush=True)
    rows = []
    if a.range_test:
        row = range_test(model, case, a.batch, a.variants.split(",")[0])
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"model": a.model, "start": a.start, "macs": a.macs, "train": len(case[2]),
                                    "batch": a.batch, "rows": [row]}) + "\n")
        return 0
    if a.variants == "none" and a.json:  # the pruned start alone
        with open(a.json, "a") as f:
            f.write(json.dumps({"model": a.model, "start": a.start, "macs": a.macs, "train": len(case[2]),
                                "calib_n": a.calib_n, "eval_n": a.eval_n, "load": os.getloadavg()[0], "dense": dense_score,
                                "pruned": pruned_score, "prune_s": prune_s, "rows": []}) + "\n")
    for spec in ([] if a.variants == "none" else a.variants.split(",")):
        row = run_variant(model, case, spec, a.epochs, a.batch, a.score_epochs, Path(a.save) if a.save else None,
                          not a.no_guard)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:  # each variant as it finishes: a killed run keeps the ones done
            with open(a.json, "a") as f:
                f.write(json.dumps({"model": a.model, "start": a.start, "macs": a.macs, "epochs": a.epochs, "train": len(case[2]),
                                    "calib_n": a.calib_n,
                                    "train_from": a.train_from, "train_source": source, "guard": not a.no_guard,
                                    "eval_n": a.eval_n, "batch": a.batch, "load": os.getloadavg()[0],
                                    "dense": dense_score, "pruned": pruned_score, "prune_s": prune_s,
                                    "rows": [row]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
