"""The switch rule of tools/seed_table.py: a candidate config replaces a default only if it is at least as
good on enough models, loses at most a point on any, and keeps as many models within a point of dense."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from seed_table import load, verdict  # noqa: E402


def _rows(model: str, dense: float, a: list[float], b: list[float]) -> list[dict]:
    return ([{"model": model, "config": f"d{i}", "dense": dense, "score": s} for i, s in enumerate(a)]
            + [{"model": model, "config": f"b{i}", "dense": dense, "score": s} for i, s in enumerate(b)])


def _write(tmp_path: Path, rows: list[dict]) -> str:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_seeds_group_by_prefix_and_a_tie_counts_as_at_least(tmp_path):
    models = load([_write(tmp_path, _rows("m", 100, [98, 99, 100], [99, 99, 99]))])
    assert models["m"]["runs"] == {"d": [98, 99, 100], "b": [99, 99, 99]}
    lines, ok = verdict(models, "d", "b", set(), wins_needed=1)
    assert ok, lines


def test_a_loss_over_one_point_on_one_model_blocks_the_switch(tmp_path):
    rows = _rows("good", 100, [97, 97, 97], [99, 99, 99]) + _rows("bad", 100, [96, 96, 96], [95, 95, 94.9])
    lines, ok = verdict(load([_write(tmp_path, rows)]), "d", "b", set(), wins_needed=1)
    assert not ok and lines[1].startswith("FAILS") and "bad" in lines[1]


def test_a_lower_is_better_metric_reads_a_rise_as_a_loss(tmp_path):
    rows = _rows("cer", 0.0, [0.0, 0.0, 0.0], [2.0, 2.0, 2.0])
    models = load([_write(tmp_path, rows)])
    assert not verdict(models, "d", "b", {"cer"}, wins_needed=1)[1]
    assert verdict(models, "d", "b", set(), wins_needed=1)[1]  # read as higher-is-better it would be a gain


def test_fewer_models_near_dense_blocks_the_switch(tmp_path):
    # b gains on two models but drops one from within a point of dense to just outside it
    rows = (_rows("a", 100, [99, 99, 99], [98.5, 98.5, 98.5]) + _rows("b", 100, [90, 90, 90], [91, 91, 91])
            + _rows("c", 100, [90, 90, 90], [91, 91, 91]))
    lines, ok = verdict(load([_write(tmp_path, rows)]), "d", "b", set(), wins_needed=2)
    assert not ok and lines[0].startswith("holds") and lines[2].startswith("FAILS")


def test_a_model_without_both_configs_exits_2(tmp_path):
    rows = [{"model": "m", "config": "d0", "dense": 1.0, "score": 1.0}]
    run = subprocess.run([sys.executable, str(TOOLS / "seed_table.py"), _write(tmp_path, rows)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "m" in run.stderr


def test_a_file_that_is_not_diag_plan_json_exits_2(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    run = subprocess.run([sys.executable, str(TOOLS / "seed_table.py"), str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and path.read_text() == "{not json"
