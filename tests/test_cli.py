"""The command-line contract: outputs, reports, exit codes 0/1/2, one-line errors, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import FIXTURES, ROOT
from onnxprune.cli.main import main

DIGITS = str(FIXTURES / "digits_cnn.onnx")


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxprune: error:")
    for needle in needles:
        assert needle in lines[0]


def test_prune_writes_valid_smaller_model_and_report(tmp_path, capsys):
    out, report = tmp_path / "small.onnx", tmp_path / "report.json"
    before = (FIXTURES / "digits_cnn.onnx").read_bytes()
    code, stdout, _ = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.3", "--calib",
                              FIXTURES / "digits_test.npz", "--round-to", "8", "--report", report, "--bench-rounds", "5")
    assert code == 0
    assert (FIXTURES / "digits_cnn.onnx").read_bytes() == before  # input untouched
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    data = json.loads(report.read_text())
    assert data["schema"] == "onnxprune.report/1"
    assert data["after"]["params"] < data["before"]["params"]
    assert data["after"]["macs"] < data["before"]["macs"]
    assert data["fidelity"]["data"] == "given" and data["fidelity"]["samples"] > 300
    assert 0.0 <= data["fidelity"]["accuracy_pruned"] <= 1.0
    assert data["latency_ratio"] > 0
    assert "params" in stdout and "MACs" in stdout
    # widths are multiples of 8 (or untouched)
    for init in model.graph.initializer:
        if len(init.dims) == 4 and init.dims[0] != 10:
            assert init.dims[0] % 8 == 0


def test_tools_script_has_the_same_contract(tmp_path):
    out = tmp_path / "small.onnx"
    script = [sys.executable, str(ROOT / "tools" / "prune_onnx.py")]
    proc = subprocess.run(script + [DIGITS, "-o", str(out), "--ratio", "0.5", "--bench-rounds", "0", "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    proc = subprocess.run(script + ["prune", DIGITS, "-o", str(out), "--ratio", "2", "-q"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_inspect_lists_groups_and_barriers(capsys):
    code, out, _ = run_cli(capsys, "inspect", FIXTURES / "residual.onnx")
    assert code == 0
    assert "groups" in out and "graph output" in out and "graph input" in out
    code, out, _ = run_cli(capsys, "inspect", FIXTURES / "residual.onnx", "--json")
    info = json.loads(out)
    assert info["prunable_channels"] > 0 and info["barriers"]


def _convinteger_model(path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    w = helper.make_tensor("w", TensorProto.UINT8, [2, 1, 1, 1], [1, 2])
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="qconv")
    model = helper.make_model(helper.make_graph([node], "q", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))


@pytest.mark.parametrize("case", ["missing", "not_onnx", "truncated", "convinteger", "ratio_high", "ratio_zero",
                                  "bad_calib", "bad_shape"])
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    model, ratio, extra = DIGITS, "0.5", []
    if case == "missing":
        model = tmp_path / "nope.onnx"
    elif case == "not_onnx":
        model = tmp_path / "text.onnx"
        model.write_text("this is not a model\n" * 20)
    elif case == "truncated":
        model = tmp_path / "cut.onnx"
        model.write_bytes((FIXTURES / "digits_cnn.onnx").read_bytes()[:5000])
    elif case == "convinteger":
        model = tmp_path / "int8.onnx"
        _convinteger_model(model)
    elif case == "ratio_high":
        ratio = "1.5"
    elif case == "ratio_zero":
        ratio = "0"
    elif case == "bad_calib":
        np.savez(tmp_path / "calib.npz", wrong_name=np.zeros((4, 1, 8, 8), np.float32))
        extra = ["--calib", tmp_path / "calib.npz"]
    elif case == "bad_shape":
        extra = ["--input-shape", "input:1xAx8"]
    out = tmp_path / "out.onnx"
    code, _, err = run_cli(capsys, "prune", model, "-o", out, "--ratio", ratio, "--bench-rounds", "0", *extra)
    assert code == 2
    assert_one_line_error(err)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    if case == "convinteger":
        assert "ConvInteger" in err and "qconv" in err


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0")
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"
    code, _, _ = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0", "--force", "-q")
    assert code == 0 and onnx.load(str(out)).graph.node


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", DIGITS])
    assert exc.value.code == 2


def test_validation_failure_exits_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """A rewrite that yields an invalid model must not be written; exit 1."""
    import onnxprune.stages as api

    def broken(plan, overrides=None):
        model = onnx.load(DIGITS)
        model.graph.node[0].input[1] = "does_not_exist"
        return model
    monkeypatch.setattr(api, "apply_plan", broken)
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0")
    assert code == 1
    assert_one_line_error(err, "checker")
    assert not out.exists()


@pytest.mark.real
@pytest.mark.parametrize("name,shape", [("nudenet_320n", "images:1x3x320x320"), ("ppocr_cls", "x:1x3x48x192")])
def test_real_models_from_the_command_line(name, shape, tmp_path, capsys):
    from onnxprune.load import zoo
    path = zoo.fetch(name)
    out, report = tmp_path / f"{name}.onnx", tmp_path / "r.json"
    code, _, err = run_cli(capsys, "prune", path, "-o", out, "--ratio", "0.3", "--input-shape", shape,
                           "--report", report, "--bench-rounds", "3", "-q")
    assert code == 0, err
    data = json.loads(report.read_text())
    assert data["after"]["params"] < 0.85 * data["before"]["params"]
    dense, pruned = onnx.load(str(path)), onnx.load(str(out))
    assert [o.name for o in dense.graph.output] == [o.name for o in pruned.graph.output]
    code, text, _ = run_cli(capsys, "inspect", path, "--input-shape", shape)
    assert code == 0 and "Barriers" in text
