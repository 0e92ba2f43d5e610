"""tools/criterion_table.py: a held-out pick lands on the cell of its criterion and seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import criterion_table  # noqa: E402


def _run(path: Path, model: str, cells: dict) -> None:
    rows = [{"model": model, "config": c, "dense": 99.0, "higher_is_better": True, "levels": {"0.5": cell}}
            for c, cell in cells.items()]
    path.write_text(json.dumps({"revision": "x", "levels": [0.5], "results": rows}))


def test_a_pick_lands_on_its_seeds_fisher_cell_or_on_reconstruction(tmp_path, capsys):
    _run(tmp_path / "few_a.json", "m", {"f0": {"score": 90.0, "output_rel_err": 0.2}, "f1": {"score": 80.0},
                                         "r0": {"score": 70.0, "output_rel_err": 0.3}})
    picks = [{"model": "m", "seed": 0, "criterion": "reconstruction"}, {"model": "m", "seed": 1, "criterion": "fisher"}]
    (tmp_path / "p.json").write_text(json.dumps(picks))
    criterion_table.main(["--runs", str(tmp_path / "few_*.json"), "--picks", str(tmp_path / "p.json")])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| m (99.0) | 90.0 (0.200) | 80.0 | 70.0 (0.300) | – |")
    assert "0: recon -> 70.0; 1: fishe -> 80.0" in row
