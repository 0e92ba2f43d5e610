"""tools/bench_latency_efficiency.py without timing: model files and survey names, input shapes, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench_latency_efficiency as ble  # noqa: E402


def test_parse_shapes_several_inputs_and_names_with_colons():
    assert ble.parse_shapes(None) is None
    assert ble.parse_shapes("input:0=1x224x224x3; mask=1X8") == {"input:0": (1, 224, 224, 3), "mask": (1, 8)}
    for bad in ("x", "x=", "x=1x0", "=1x3", "x=1xa"):
        with pytest.raises(ValueError, match="bad --shape"):
            ble.parse_shapes(bad)


def test_a_bad_shape_is_a_one_line_error_exit_2(capsys):
    assert ble.main(["--models", str(ROOT / "fixtures" / "chain.onnx"), "--shape", "x=1x-3"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: bad --shape")


def test_a_model_file_loads_with_the_shapes_given():
    path = str(ROOT / "fixtures" / "chain.onnx")
    model, shapes = ble.load_dense(path)
    assert isinstance(model, onnx.ModelProto) and shapes is None
    _, shapes = ble.load_dense(path, {"x": (2, 3, 8, 8)})
    assert shapes == {"x": (2, 3, 8, 8)}
    with pytest.raises(SystemExit, match="no such model file"):
        ble.load_dense(str(ROOT / "fixtures" / "missing.onnx"))


def test_survey_names_take_the_entry_shapes_unless_given(monkeypatch, tmp_path):
    import survey_exports
    path = tmp_path / "pnet.onnx"
    onnx.save(onnx.load(str(ROOT / "fixtures" / "chain.onnx")), str(path))
    monkeypatch.setattr(survey_exports, "model_path", lambda entry: path)
    _, shapes = ble.load_dense("survey:mtcnn_pnet")
    assert shapes == {"input_1": (1, 48, 48, 3)}  # the survey entry's
    _, shapes = ble.load_dense("survey:mtcnn_pnet", {"input_1": (1, 24, 24, 3)})
    assert shapes == {"input_1": (1, 24, 24, 3)}
    _, shapes = ble.load_dense("survey:orinet")
    assert shapes is None  # the model's own
    with pytest.raises(SystemExit, match="unknown survey model"):
        ble.load_dense("survey:nope")


def test_allocation_pair_takes_survey_names_and_refuses_bad_options(monkeypatch, tmp_path, capsys):
    import bench_allocation_pair as bap
    import survey_exports
    monkeypatch.setattr(survey_exports, "model_path", lambda entry: tmp_path / f"{entry.key}.onnx")
    assert bap.model_file("survey:orinet") == str(tmp_path / "orinet.onnx")
    assert bap.model_file("some/where/model.onnx") == "some/where/model.onnx"
    with pytest.raises(SystemExit, match="unknown survey model"):
        bap.model_file("survey:nope")
    assert bap.main(["--models", "survey:orinet", "--after-opts", "[16]"]) == 2
    assert capsys.readouterr().err.startswith("error: bad options")
