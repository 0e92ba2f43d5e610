"""The pruning schedules side by side on real data: the digits CNN and a digits MLP.

    python tools/bench_schedules.py [--seeds 0,1,2] [--only cnn,cnn-scratch,mlp] [--json out/schedules.json]

Three setups, each trained on the 1400 training digits and scored on the 397 held-out ones, with
every schedule at 50% conv / 80% linear sparsity (`onnxprune compare` underneath):

- cnn:          fixtures/digits_cnn.onnx from its trained weights (98.49%), 10 epochs, lr 3e-3
- cnn-scratch:  the same architecture re-initialised (Kaiming, seeded), 60 epochs, lr 3e-3
- mlp:          fixtures/digits_mlp_init.onnx (Flatten-64-128-10, fresh Kaiming init), 30 epochs, lr 3e-2

The full table (sizes, interleaved latency, energy) is printed for the first seed; accuracy is then
given for every seed with its mean (plus In-Training and SET with zeta annealed along a cosine, RigL's
rule, as extra rows), and the issue's bar is checked on the means: SET at 80% linear sparsity ends
within 1 point of dense.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.load.data import load_npz  # noqa: E402
from onnxprune.recover.schedules import ScheduleOptions, TrainConfig, train_schedule  # noqa: E402
from onnxprune.recover.schedules.compare import compare  # noqa: E402
from onnxprune.recover.schedules.measure import accuracy as score  # noqa: E402
from onnxprune.recover.schedules.report import format_compare  # noqa: E402

FIX = ROOT / "fixtures"
# name -> (model, epochs, lr, reinit, where the weights start)
SETUPS = {
    "cnn": (FIX / "digits_cnn.onnx", 10, 3e-3, None, "from the file's trained weights"),
    "cnn-scratch": (FIX / "digits_cnn.onnx", 60, 3e-3, "kaiming", "re-initialised (Kaiming, seeded)"),
    "mlp": (FIX / "digits_mlp_init.onnx", 30, 3e-2, None, "from the file's fresh Kaiming init"),
}
BAR_POINTS = 1.0
# extra rows: the cut-and-regrow schedules with zeta annealed along a cosine (RigL's rule) instead of fixed
VARIANTS = {"in-cosine": ("in", "In-Training, cosine ζ"), "set-cosine": ("set", "SET, cosine ζ")}


def run_setup(name: str, seeds: list[int], threads: int, zeta: float) -> dict:
    path, epochs, lr, reinit, _ = SETUPS[name]
    model = onnx.load(str(path))
    train = load_npz(FIX / "digits_train.npz", {"input": 4})
    test = load_npz(FIX / "digits_test.npz", {"input": 4})
    reports = []
    for seed in seeds:
        options = ScheduleOptions(epochs=epochs, reinit=reinit, zeta=zeta,
                                  train=TrainConfig(lr=lr, threads=threads, seed=seed))
        start = time.perf_counter()
        report = compare(model, train, test, options, rounds=30, repeat=20, threads=threads).report
        cosine = replace(options, zeta_decay="cosine")
        report["variants"] = {key: score(train_schedule(model, train, schedule, cosine).model, test, threads)
                              for key, (schedule, _) in VARIANTS.items()}
        reports.append(report)
        print(f"[{name}] seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    accuracy = {row["schedule"]: [r["rows"][i]["accuracy"] for r in reports]
                for i, row in enumerate(reports[0]["rows"])}
    accuracy.update({key: [r["variants"][key] for r in reports] for key in VARIANTS})
    return {"setup": name, "model": str(path.relative_to(ROOT)), "epochs": epochs, "lr": lr, "reinit": reinit,
            "seeds": seeds, "first": reports[0], "accuracy": accuracy}


def seed_table(result: dict) -> str:
    acc = result["accuracy"]
    dense = float(np.mean(acc["dense"]))
    titles = {r["schedule"]: r["title"] for r in result["first"]["rows"]}
    titles.update({key: title for key, (_, title) in VARIANTS.items()})
    seeds = result["seeds"]
    lines = ["| schedule | " + " | ".join(f"seed {s}" for s in seeds) + " | mean % | Δ vs dense (pts) |",
             "|---|" + "---|" * len(seeds) + "---|---|"]
    for name, values in acc.items():
        mean = float(np.mean(values))
        lines.append(f"| {titles[name]} | " + " | ".join(f"{100 * v:.2f}" for v in values)
                     + f" | {100 * mean:.2f} | {100 * (mean - dense):+.2f} |")
    lines.append("")
    for key in ("set", "set-cosine"):
        mean = float(np.mean(acc[key]))
        gap = 100 * (dense - mean)
        lines.append(f"SET bar, {titles[key]} (within {BAR_POINTS:g} point of dense, mean over seeds): "
                     f"{'met' if gap <= BAR_POINTS else 'NOT met'} (dense {100 * dense:.2f}%, {100 * mean:.2f}%, "
                     f"Δ {-gap:+.2f} pts)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--only", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for training and timing (default 1)")
    ap.add_argument("--zeta", type=float, default=0.3, help="in/set: share cut and regrown per epoch (default 0.3)")
    ap.add_argument("--json", help="write every report here")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for name in args.only.split(","):
        result = run_setup(name, seeds, args.threads, args.zeta)
        results.append(result)
        path, epochs, lr, reinit, start = SETUPS[name]
        print(f"\n### {name}: {result['model']}, {start}, {epochs} epochs, AdamW lr {lr:g}, batch 64\n")
        print(f"First seed ({seeds[0]}):\n")
        print(format_compare(result["first"]))
        print(f"\nAccuracy over seeds {args.seeds}:\n")
        print(seed_table(result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
