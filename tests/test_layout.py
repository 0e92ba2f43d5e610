"""The house rules of the code: imports point down the stages with no cycles, short signatures and
modules, and every package installed."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_structure  # noqa: E402


def test_structure_has_no_cycles_upward_imports_or_long_functions():
    assert check_structure.problems() == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    pkg = tmp_path / "onnxprune"
    (pkg / "load").mkdir(parents=True)
    (pkg / "check").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "load" / "__init__.py").write_text("")
    (pkg / "check" / "__init__.py").write_text("")
    (pkg / "load" / "a.py").write_text("def f():\n    from onnxprune.check import b\n")
    (pkg / "check" / "b.py").write_text("from onnxprune.load import a\n")
    monkeypatch.setattr(check_structure, "PACKAGE_DIRS", {"onnxprune": pkg})
    found = check_structure.problems()
    assert any(p.startswith("cycle:") for p in found)
    assert "upward import: onnxprune.load.a imports onnxprune.check.b" in found


def test_every_package_folder_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "onnxprune").rglob("__init__.py")}
    assert found | {"onnxprune.passes"} == listed


def test_the_command_runs_from_the_installed_entry_point():
    out = subprocess.run([sys.executable, "-m", "onnxprune", "--version"], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.startswith("onnxprune ")
