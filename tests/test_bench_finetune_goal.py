"""tools/bench_finetune_goal.py end to end on the digits CNN: the harness behind issue 10's goal table runs
(its cases once broke when bench_iterative moved to the CLI), and its variant suffixes reach TrainSettings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_finetune_goal as goal  # noqa: E402


def test_variant_warmup_and_batch_suffixes():
    v = goal.variant("3e-3+w15+b8")
    assert v["lr"] == 3e-3 and v["warmup_steps"] == 15 and v["batch_size"] == 8
    assert "warmup_steps" not in goal.variant("auto")


def test_digits_run_writes_a_scored_line(tmp_path):
    out = tmp_path / "runs.jsonl"
    code = goal.main(["--model", "digits", "--epochs", "1", "--train", "128", "--variants", "1e-3+w4",
                      "--score-epochs", "--work", str(tmp_path / "work"), "--json", str(out)])
    assert code == 0
    line = json.loads(out.read_text().splitlines()[-1])
    row = line["rows"][0]
    assert line["model"] == "digits" and line["dense"] > 95 and 0 < line["pruned"] <= 100
    assert row["variant"] == "1e-3+w4" and len(row["epoch_scores"]) == 1 and len(row["val_loss"]) == 2
    assert row["best_epoch"] in (0, 1) and 0 < row["score"] <= 100
    table = goal.epoch_table(str(out)).splitlines()
    assert len(table) == 3 and table[2].startswith("| digits | 1e-3+w4 | 0.001 |")


def test_lrw_suffix_asks_for_a_ramped_range_test():
    assert goal.variant("auto+lrw+w15")["lr_test_warmup"] is True
    assert "lr_test_warmup" not in goal.variant("auto+w15")
