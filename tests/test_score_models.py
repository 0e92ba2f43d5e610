"""tools/score_models.py: a missing model file is one line and exit 2, before any task is loaded."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import score_models  # noqa: E402


def test_a_missing_model_is_exit_2_with_one_line(tmp_path, capsys):
    assert score_models.main(["nudenet_320n_wide", str(tmp_path / "nope.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.onnx" in err[0]


def test_diag_detect_terms_refuses_a_missing_model(tmp_path, capsys):
    import diag_detect_terms
    assert diag_detect_terms.main(["nudenet_320n", str(tmp_path / "nope.onnx")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
