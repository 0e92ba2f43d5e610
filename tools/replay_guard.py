#!/usr/bin/env python3
"""Which epoch each fine-tuning guard rule keeps, replayed on stored runs of bench_finetune_goal
(`--score-epochs` lines: per-epoch held-out loss, guard loss and agreement, task scores), so rules can be
compared on the task without training again. Rules:

- none: the best held-out loss, epoch 0 included (the rule before wave 15);
- strict: the guard of waves 15-16 (a guard KL no higher than epoch 0's, agreement within one sample);
- wave17: the guard KL may exceed epoch 0's by one sample's share (waves 17);
- today: trainloop.eligible as it runs (since wave 18 a guard KL at or below the epoch's held-out KL passes too);
- debiased: an epoch passes if its guard KL is no worse than the larger of epoch 0's guard KL and epoch 0's
  held-out KL (the start's guard KL is low where sequential recovery fitted those samples).

    python tools/replay_guard.py docs/results/finetune_goal_s15.jsonl docs/results/finetune_goal_s16*.jsonl \\
        [--loss-only nudenet_320n]

--loss-only: models judged by the guard KL alone (a detector's packed rows since wave 16), for runs recorded
before that rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxprune.recover.trainloop import eligible  # noqa: E402

RULES = ("none", "strict", "wave17", "today", "debiased")


def entries(row: dict, loss_only: bool, guard_samples: int) -> list[dict]:
    """The run's per-epoch history as the loop records it."""
    out = []
    for e, loss in enumerate(row["val_loss"]):
        entry = {"val_loss": loss, "guard_loss": row["guard_loss"][e], "guard_samples": guard_samples}
        if row.get("guard_agreement") and row["guard_agreement"][e] is not None and not loss_only:  # None: packed rows
            entry["guard_agreement"] = row["guard_agreement"][e]
        out.append(entry)
    return out


def kept(history: list[dict], rule: str) -> int:
    """The epoch `rule` keeps: the lowest held-out loss among the eligible epochs (epoch 0 always is)."""
    first, best = history[0], 0
    for e, entry in enumerate(history[1:], 1):
        if rule == "today":
            ok = eligible(entry, first)
        elif rule == "debiased":
            ok = eligible(entry, {**first, "guard_loss": max(first["guard_loss"], first["val_loss"])})
        elif rule == "strict":
            ok = eligible(entry, first) and entry["guard_loss"] <= first["guard_loss"]
        elif rule == "wave17":
            ok = eligible({k: v for k, v in entry.items() if k != "val_loss"}, first)
        else:
            ok = True
        if ok and entry["val_loss"] < history[best]["val_loss"]:
            best = e
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--loss-only", default="", help="comma-separated models judged by the guard KL alone")
    ap.add_argument("--guard-samples", type=int, default=32, help="calibration samples the guard judged on")
    a = ap.parse_args(argv)
    loss_only = set(filter(None, a.loss_only.split(",")))
    print("| file | model | variant | start | " + " | ".join(RULES) + " |\n|---|---|---|---|" + "---|" * len(RULES))
    for path in a.runs:
        for line in open(path):
            run = json.loads(line)
            for row in run.get("rows", []):
                if not row.get("epoch_scores") or not row.get("guard_loss"):
                    continue
                scores = [run["pruned"], *row["epoch_scores"]]
                history = entries(row, run["model"] in loss_only, a.guard_samples)
                cells = [f"{scores[k]:.2f} ({k})" for k in (kept(history, r) for r in RULES)]
                print(f"| {Path(path).name} | {run['model']} | {row['variant']} | {scores[0]:.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
