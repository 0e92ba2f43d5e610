"""Recipes: `onnxprune run RECIPE` and `tools/prune_onnx.py --recipe RECIPE`, the bundled examples,
and one-line errors (exit 2) for every way a recipe can be wrong, before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import FIXTURES, ROOT
from onnxprune.report import schema
from onnxprune.cli.main import main
from onnxprune.passes.recipe import load_recipe

EXAMPLES = ROOT / "examples"
LOCAL_EXAMPLES = ["digits_cnn.toml", "digits_cnn_int8.toml", "c2f_detector.toml", "transformer.json"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err
    assert lines[0].startswith("onnxprune: error:")
    return lines[0]


@pytest.mark.parametrize("name", LOCAL_EXAMPLES)
def test_example_recipes_run(name, tmp_path, capsys):
    out, report, summary = tmp_path / "m.onnx", tmp_path / "r.json", tmp_path / "s.md"
    code, stdout, err = run_cli(capsys, "run", EXAMPLES / name, "-o", out, "--report", report, "--summary", summary)
    assert code == 0, err
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    doc = json.loads(report.read_text())
    schema.check(doc)
    assert doc["recipe"] == str(EXAMPLES / name) and doc["output"] == str(out)
    assert doc["after"]["params"] < doc["before"]["params"]
    assert doc["gates"] and all(g["passed"] for g in doc["gates"])
    assert "## Passes" in summary.read_text() and "gates:" in stdout


def test_every_example_is_tested():
    on_disk = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".toml", ".json"))
    assert on_disk == sorted(LOCAL_EXAMPLES + ["nudenet_320n.toml"])


@pytest.mark.real
def test_nudenet_recipe(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", EXAMPLES / "nudenet_320n.toml", "-o", tmp_path / "n.onnx",
                           "--report", tmp_path / "r.json", "-q")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    schema.check(doc)
    assert doc["after"]["macs"] < 0.7 * doc["before"]["macs"]
    boxes, classes = doc["fidelity"]["parts"]["output0"]  # the packed head, reported per part
    assert (boxes["rows"], classes["rows"]) == ("0-3", "4-21") and classes["cosine"] < boxes["cosine"]


def test_tools_script_runs_a_recipe(tmp_path):
    out = tmp_path / "t.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "prune_onnx.py"), "--recipe",
                           str(EXAMPLES / "transformer.json"), "-o", str(out), "--report", str(tmp_path / "r.json"),
                           "-q"],  # the recipe's own report (out/ in the checkout) may exist: it needs --force
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and out.exists()


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = f'''
input = "{FIXTURES / "residual.onnx"}"
output = "out/residual_pruned.onnx"
report = "out/report.json"
[[passes]]
pass = "ChannelPruning"
ratio = 0.5
'''


def test_paths_are_relative_to_the_recipe(tmp_path, capsys, monkeypatch):
    recipe = _write(tmp_path, GOOD)
    monkeypatch.chdir(ROOT)  # a different working directory
    code, _, err = run_cli(capsys, "run", recipe, "-q")
    assert code == 0, err
    assert (tmp_path / "out" / "residual_pruned.onnx").exists()
    schema.check(json.loads((tmp_path / "out" / "report.json").read_text()))
    parsed = load_recipe(recipe)
    assert parsed.output == str(tmp_path / "out" / "residual_pruned.onnx") and parsed.bench_rounds == 20


def test_json_and_toml_say_the_same(tmp_path):
    doc = {"input": "m.onnx", "output": "o.onnx", "input_shapes": {"x": "1x3x8x8"},
           "passes": [{"pass": "channel_pruning", "ratio": 0.25, "criterion": "l1"}, {"pass": "Validate"}]}
    from_json = load_recipe(_write(tmp_path, json.dumps(doc), "r.json"))
    from_toml = load_recipe(_write(tmp_path, '''input = "m.onnx"
output = "o.onnx"
input_shapes = {x = [1, 3, 8, 8]}
[[passes]]
pass = "channel_pruning"
ratio = 0.25
criterion = "l1"
[[passes]]
pass = "Validate"
''', "r.toml"))
    for r in (from_json, from_toml):
        assert r.input_shapes == {"x": (1, 3, 8, 8)}
        assert [repr(s) for s in r.steps] == ["ChannelPruning(ratio=0.25, criterion='l1')", "Validate()"]


def test_recipe_gate_failure_exits_1_and_keeps_the_report(tmp_path, capsys):
    recipe = _write(tmp_path, GOOD + '''
[[passes]]
pass = "Validate"
min_cosine = 0.999999
''')
    code, _, err = run_cli(capsys, "run", recipe, "-q")
    assert code == 1
    line = one_line_error(err)
    assert "gate failed: cosine" in line and "< min_cosine 0.999999" in line
    assert not (tmp_path / "out" / "residual_pruned.onnx").exists()
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    schema.check(doc)
    assert doc["output"] is None and doc["gates"][0]["passed"] is False


BAD_RECIPES = {
    "unknown_key": ('ratio = 0.3\n' + GOOD, "unknown key(s) ratio"),
    "unknown_pass": (GOOD + '[[passes]]\npass = "Prune"\n', "unknown pass 'Prune'"),
    "bad_option": (GOOD.replace("ratio = 0.5", "ratio = 0.5\nwobble = 2"), "wobble"),
    "no_pass_name": (GOOD.replace('pass = "ChannelPruning"\n', ""), "needs a 'pass' name"),
    "no_passes": ('input = "m.onnx"\noutput = "o.onnx"\n', "'passes' must be a non-empty list"),
    "no_input": ('output = "o.onnx"\n[[passes]]\npass = "Validate"\n', "'input'"),
    "bad_toml": ("input = \n", "not valid TOML"),
    "bad_shape": ('input_shapes = {input = "1xAx3"}\n' + GOOD, "input_shapes.input"),
    "bad_pass_shape": (GOOD + 'input_shapes = {input = [1, 0]}\n', "input_shapes.input"),
    "bad_schema": ('schema = "onnxprune.recipe/9"\n' + GOOD, "recipe/9"),
    "bad_seed": ('seed = -1\n' + GOOD, "'seed'"),
    "missing_model": (GOOD.replace(str(FIXTURES / "residual.onnx"), "nope.onnx"), "no such file"),
    "bad_threshold": (GOOD + '[[passes]]\npass = "Validate"\nmax_drop = 200\n', "max_drop"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipes_exit_2_before_any_work(case, tmp_path, capsys):
    text, needle = BAD_RECIPES[case]
    recipe = _write(tmp_path, text)
    code, _, err = run_cli(capsys, "run", recipe, "-o", tmp_path / "o.onnx")
    assert code == 2
    assert needle in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]  # nothing written


def test_missing_recipe_and_missing_output(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", tmp_path / "none.toml")
    assert code == 2 and "no such recipe" in one_line_error(err)
    recipe = _write(tmp_path, GOOD.replace('output = "out/residual_pruned.onnx"\n', ""))
    code, _, err = run_cli(capsys, "run", recipe)
    assert code == 2 and "no output" in one_line_error(err)
    recipe = _write(tmp_path, GOOD, "r.yaml")
    code, _, err = run_cli(capsys, "run", recipe, "-o", tmp_path / "o.onnx")
    assert code == 2 and ".toml or .json" in one_line_error(err)
