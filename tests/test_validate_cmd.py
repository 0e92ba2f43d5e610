"""`onnxprune validate`, the gates on `prune`, and the documented report schema.

Exit codes: 0 valid (and every gate given held), 1 invalid or a missed gate (the message names the
figure), 2 bad input or usage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, ROOT
from onnxprune.report import schema
from onnxprune.cli.main import main

DIGITS = FIXTURES / "digits_cnn.onnx"
TEST = FIXTURES / "digits_test.npz"
CALIB = FIXTURES / "digits_calib.npz"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxprune: error:")
    return lines[0]


def assert_conforms(document: dict) -> None:
    """The document meets the schema it declares (and jsonschema agrees, where installed)."""
    schema.check(document)
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(document, schema.schema_for(document))


@pytest.fixture(scope="module")
def pruned(tmp_path_factory) -> Path:
    """The digits CNN at half its MACs, recovered by least squares: accuracy 0.985 -> ~0.97."""
    out = tmp_path_factory.mktemp("validate") / "digits_pruned.onnx"
    code = main(["prune", str(DIGITS), "-o", str(out), "--target-macs", "0.5", "--calib", str(CALIB),
                 "--criterion", "reconstruction", "--scope", "global", "--recover", "lstsq", "--bench-rounds", "0",
                 "-q"])
    assert code == 0
    return out


# --- validate ---------------------------------------------------------------------------------------

def test_validate_reports_every_check_and_exits_0(pruned, capsys):
    code, out, err = run_cli(capsys, "validate", DIGITS, pruned, "--data", TEST)
    assert code == 0, err
    for needle in ("checker", "shape inference", "CPUExecutionProvider passed", "interface", "cosine",
                   "accuracy 0.9849 ->"):
        assert needle in out


def test_validate_json_conforms_to_its_schema(pruned, capsys):
    code, out, _ = run_cli(capsys, "validate", DIGITS, pruned, "--data", TEST, "--max-drop", "5", "--json")
    assert code == 0
    doc = json.loads(out)
    assert_conforms(doc)
    assert doc["schema"] == "onnxprune.validate/1"
    assert doc["fidelity"]["data"] == "given" and doc["fidelity"]["samples"] == 397
    assert doc["validation"]["providers"]["CPUExecutionProvider"] == "passed"
    [gate] = doc["gates"]
    assert gate["name"] == "accuracy_drop" and gate["passed"] and 0 <= gate["value"] <= 5


@pytest.mark.parametrize("flags,needle", [
    (["--min-cosine", "0.9999"], "cosine 0."),
    (["--data", str(TEST), "--max-drop", "0.01"], "accuracy drop"),
])
def test_validate_missed_gate_exits_1_naming_the_figure(pruned, capsys, flags, needle):
    code, out, err = run_cli(capsys, "validate", DIGITS, pruned, *flags, "--json")
    assert code == 1
    line = one_line_error(err)
    assert "gate failed" in line and needle in line and flags[-2] in line  # the flag that set the gate
    doc = json.loads(out)  # the document is still printed, with the outcome
    assert_conforms(doc)
    assert [g["passed"] for g in doc["gates"]] == [False]


def test_validate_gate_message_format(pruned, capsys):
    code, _, err = run_cli(capsys, "validate", DIGITS, pruned, "--min-cosine", "0.99999", "-q")
    assert code == 1
    line = one_line_error(err)
    shown = line.split("cosine ")[1].split(" <")[0]
    assert line == f"onnxprune: error: gate failed: cosine {shown} < --min-cosine 0.99999"
    assert float(shown) < 0.99999


def _broken(path: Path, how: str) -> Path:
    model = onnx.load(str(DIGITS))
    if how == "checker":
        model.graph.node[0].input[1] = "does_not_exist"
    elif how == "output_name":
        old = model.graph.output[0].name
        model.graph.output[0].name = "renamed"
        for node in model.graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = "renamed"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("how,needle", [("checker", "checker"), ("output_name", "outputs"),
                                        ("other_model", "changed declared shape")])
def test_validate_invalid_model_exits_1(tmp_path, capsys, how, needle):
    bad = FIXTURES / "chain.onnx" if how == "other_model" else _broken(tmp_path / "bad.onnx", how)
    code, out, err = run_cli(capsys, "validate", DIGITS, bad)
    assert code == 1
    assert needle in one_line_error(err)


@pytest.mark.parametrize("case", ["missing_dense", "missing_pruned", "not_onnx", "bad_cosine", "drop_no_data",
                                  "bad_data", "bad_shape"])
def test_validate_bad_input_exits_2(pruned, tmp_path, capsys, case):
    dense, candidate, extra = DIGITS, pruned, []
    if case == "missing_dense":
        dense = tmp_path / "nope.onnx"
    elif case == "missing_pruned":
        candidate = tmp_path / "nope.onnx"
    elif case == "not_onnx":
        candidate = tmp_path / "junk.onnx"
        candidate.write_text("not a model\n" * 10)
    elif case == "bad_cosine":
        extra = ["--min-cosine", "2"]
    elif case == "drop_no_data":
        extra = ["--max-drop", "1"]
    elif case == "bad_data":
        np.savez(tmp_path / "d.npz", wrong=np.zeros((2, 1, 8, 8), np.float32))
        extra = ["--data", tmp_path / "d.npz"]
    elif case == "bad_shape":
        extra = ["--input-shape", "nosuch:1x2"]
    code, _, err = run_cli(capsys, "validate", dense, candidate, *extra)
    assert code == 2
    one_line_error(err)


def test_max_drop_without_labels_is_a_usage_error(pruned, tmp_path, capsys):
    data = np.load(TEST)
    np.savez(tmp_path / "nolabels.npz", input=data["input"][:16])
    code, _, err = run_cli(capsys, "validate", DIGITS, pruned, "--data", tmp_path / "nolabels.npz", "--max-drop", "1")
    assert code == 2
    assert "labels" in one_line_error(err)


# --- gates, summary and plots on prune ---------------------------------------------------------------

def _prune(tmp_path, capsys, *extra):
    out, report, summary = tmp_path / "p.onnx", tmp_path / "r.json", tmp_path / "s.md"
    code, stdout, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.3", "--calib", CALIB,
                                "--data", TEST, "--bench-rounds", "3", "--report", report, "--summary", summary,
                                *extra)
    return code, out, report, summary, stdout, err


def test_prune_gate_failure_exits_1_writes_report_not_model(tmp_path, capsys):
    # plain L2 without recovery: the data-aware defaults keep this model above the cosine gate
    code, out, report, summary, stdout, err = _prune(tmp_path, capsys, "--min-cosine", "0.999", "--max-drop", "0.5",
                                                     "--criterion", "l2", "--scope", "local", "--recover", "none")
    assert code == 1
    line = one_line_error(err)
    assert "gate failed: cosine" in line and "--min-cosine 0.999" in line and "--max-drop 0.5" in line
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "s.md"]  # no temp files either
    doc = json.loads(report.read_text())
    assert_conforms(doc)
    assert doc["output"] is None
    assert [(g["name"], g["passed"]) for g in doc["gates"]] == [("cosine", False), ("accuracy_drop", False)]
    assert doc["gates"][0]["threshold"] == 0.999 and doc["gates"][1]["flag"] == "--max-drop"
    text = summary.read_text()
    assert "**not written**" in text and "**FAILED**" in text and "## Gates" in text
    assert "FAILED" in stdout  # the table still shows what happened


def test_prune_gates_that_hold_exit_0(tmp_path, capsys):
    code, out, report, summary, stdout, err = _prune(tmp_path, capsys, "--min-cosine", "0.1", "--max-drop", "90")
    assert code == 0, err
    assert out.exists()
    doc = json.loads(report.read_text())
    assert_conforms(doc)
    assert doc["output"] == str(out) and all(g["passed"] for g in doc["gates"])
    text = summary.read_text()
    assert text.startswith("# onnxprune report") and "| params |" in text and "passed" in text


def test_prune_report_without_gates_conforms(tmp_path, capsys):
    code, out, report, *_ = _prune(tmp_path, capsys, "-q")
    assert code == 0
    doc = json.loads(report.read_text())
    assert_conforms(doc)
    assert doc["gates"] == [] and doc["output"] == str(out)


def test_prune_max_drop_needs_data(tmp_path, capsys):
    out = tmp_path / "p.onnx"
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.3", "--max-drop", "1")
    assert code == 2 and "labelled data" in one_line_error(err)
    assert not out.exists()


def test_plot_writes_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, *_ = _prune(tmp_path, capsys, "--plot", tmp_path / "plots", "-q")
    assert code == 0
    pngs = sorted((tmp_path / "plots").iterdir())
    assert [p.name for p in pngs] == ["kept_channels.png", "layer_channels.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_plot_without_matplotlib_is_a_one_line_usage_error(tmp_path, capsys, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = tmp_path / "p.onnx"
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.3", "--plot", tmp_path / "plots")
    assert code == 2
    assert "onnxprune[plot]" in one_line_error(err)
    assert not out.exists() and not (tmp_path / "plots").exists()


# --- the schema itself -------------------------------------------------------------------------------

def test_validator_finds_problems():
    good = {"schema": "onnxprune.validate/1", "dense": "a", "pruned": "b", "gates": [],
            "validation": {"checker": "passed", "onnxruntime": "passed", "interface": "unchanged"},
            "fidelity": {"samples": 3, "cosine": 1.0, "rel_l2": 0.0, "max_abs": 0.0}}
    assert schema.validate(good, schema.VALIDATE_SCHEMA) == []
    bad = json.loads(json.dumps(good))
    del bad["dense"]
    bad["fidelity"]["samples"] = True  # a boolean is not an integer
    bad["gates"] = [{"name": "cosine", "comparison": "<", "threshold": 1, "value": 1, "passed": "yes"}]
    problems = schema.validate(bad, schema.VALIDATE_SCHEMA)
    assert "$: missing 'dense'" in problems
    assert any(p.startswith("$.fidelity.samples") for p in problems)
    assert any(p.startswith("$.gates[0].comparison") for p in problems)
    assert any(p.startswith("$.gates[0].passed") for p in problems)
    with pytest.raises(ValueError):
        schema.check(bad)


def test_docs_describe_every_schema_field():
    """docs/report-schema.md and onnxprune/schema.py stay in agreement."""
    doc = (ROOT / "docs" / "report-schema.md").read_text()
    for name in (schema.REPORT, schema.VALIDATE, schema.BENCH):
        assert f"`{name}`" in doc
    for sch in (schema.REPORT_SCHEMA, schema.VALIDATE_SCHEMA, schema.BENCH_SCHEMA):
        stack = [sch]
        while stack:
            node = stack.pop()
            for key, sub in node.get("properties", {}).items():
                assert f"`{key}`" in doc, f"docs/report-schema.md does not describe '{key}'"
                stack.append(sub)
            if isinstance(node.get("items"), dict):
                stack.append(node["items"])
