"""The README's examples run as written.

- every ```python block runs in a fresh interpreter, in a scratch folder that holds `model.onnx`
  and `calib.npz` (the placeholder names the Library example uses) and links to fixtures/;
- every ```sh block runs line by line from a scratch folder that links fixtures/, examples/ and
  tools/ (so outputs land in the scratch out/), and each command must exit 0;
- every ```toml block is a verbatim excerpt of a recipe in examples/, so the README cannot drift.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README) if kind == lang]


@pytest.fixture()
def scratch(tmp_path) -> Path:
    for name in ("fixtures", "examples", "tools"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    shutil.copy(FIXTURES / "digits_cnn.onnx", tmp_path / "model.onnx")
    shutil.copy(FIXTURES / "digits_calib.npz", tmp_path / "calib.npz")
    return tmp_path


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_readme_has_runnable_examples():
    assert len(blocks("python")) >= 2 and len(blocks("sh")) >= 1 and len(blocks("toml")) >= 1


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(index, scratch):
    code = blocks("python")[index]
    if "import onnx_ir" in code:
        pytest.importorskip("onnx_ir")  # the optional 'ir' extra (in 'dev')
    proc = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"README python block {index} failed:\n{code}\n{proc.stderr}"


def _command(line: str) -> list[str]:
    words = shlex.split(line)
    if words[0] == "onnxprune":
        return [sys.executable, "-m", "onnxprune", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"README sh line does not start with onnxprune or python: {line}")


def test_shell_examples_run(scratch):
    lines = [l.strip() for body in blocks("sh") for l in body.splitlines() if l.strip() and not l.startswith("#")]
    assert lines
    for line in lines:
        proc = subprocess.run(_command(line), cwd=scratch, env=_env(), capture_output=True, text=True)
        assert proc.returncode == 0, f"README command failed ({proc.returncode}): {line}\n{proc.stderr}"
    assert (scratch / "out" / "digits_cnn_pruned.onnx").exists()


def test_toml_examples_are_excerpts_of_real_recipes():
    recipes = [p.read_text() for p in (ROOT / "examples").glob("*.toml")]
    for body in blocks("toml"):
        assert any(body in text for text in recipes), f"README toml block is not in examples/:\n{body}"
