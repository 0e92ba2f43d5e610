"""tools/diag_plan.py runs a config that leaves the rounding to its default (it crashed on round_to None)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def test_a_default_config_chooses_applies_and_scores_a_plan(tmp_path, monkeypatch):
    import diag_plan

    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["diag_plan.py", "digits_cnn", "--levels", "0.5", "--configs",
                                      'r0={"criterion":"reconstruction"}', "--calib-n", "16", "--json", str(out)])
    assert diag_plan.main() == 0
    row, = json.loads(out.read_text())
    assert row["config"] == "r0" and 0.4 < row["macs"] <= 0.55 and row["score"] > 50
