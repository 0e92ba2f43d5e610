"""The `make demo` model: its accuracy is what the README says, and the demo's own command keeps it.

The command is read from the Makefile (tools/demo_runs.py), so the test follows the demo. Latency is
not asserted (it is a timing); tools/demo_runs.py measures it.
"""

from __future__ import annotations

import importlib.util
import json
import re

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, ROOT
from onnxprune.cli.main import main
from onnxprune.load.data import load_npz
from onnxprune.load.runtime import run_dataset, session

TEST = load_npz(FIXTURES / "mnist_test.npz", {"input": 4})


def _demo_runs():
    spec = importlib.util.spec_from_file_location("demo_runs", ROOT / "tools" / "demo_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def accuracy(path) -> float:
    return float((run_dataset(session(onnx.load(str(path))), TEST)[0].argmax(1) == TEST.labels).mean())


def readme_dense_accuracy() -> float:
    """The dense accuracy the README's demo paragraph states, e.g. "98.80% on the 2000 held-out"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("`make demo` "):]
    return float(re.search(r"([\d.]+)% on the ([\d,]+) held-out", section).group(1)) / 100


def test_demo_data_is_in_the_npz_layout():
    for name, count in (("mnist_test", 2000), ("mnist_calib", 128), ("mnist_train", 2000)):
        npz = np.load(FIXTURES / f"{name}.npz")
        assert sorted(npz.files) == ["input", "labels"]
        assert npz["input"].shape == (count, 1, 28, 28) and npz["input"].dtype == np.float32
        assert npz["labels"].shape == (count,) and npz["labels"].dtype == np.int64
    assert sorted(set(TEST.labels.tolist())) == list(range(10))


def test_dense_accuracy_is_what_the_readme_says():
    assert accuracy(FIXTURES / "mnist_cnn.onnx") == pytest.approx(readme_dense_accuracy(), abs=1e-9)


def test_demo_command_keeps_accuracy_within_a_point_at_its_macs_target(tmp_path, capsys):
    tools = _demo_runs()
    args = [str(ROOT / a) if a.startswith("fixtures/") else a for a in tools.demo_command()]  # any cwd
    out, report = tmp_path / "p.onnx", tmp_path / "r.json"
    args = tools.with_option(tools.with_option(args, "-o", str(out)), "--report", str(report))
    assert main([*args, "--bench-rounds", "0", "-q"]) == 0
    r = json.loads(report.read_text())
    target = float(args[args.index("--target-macs") + 1])
    assert r["after"]["macs"] / r["before"]["macs"] == pytest.approx(target, abs=0.02)
    dense, pruned = accuracy(FIXTURES / "mnist_cnn.onnx"), accuracy(out)
    assert r["fidelity"]["accuracy_dense"] == pytest.approx(dense) and r["fidelity"]["accuracy_pruned"] == pytest.approx(pruned)
    assert pruned >= dense - 0.01
    assert onnx.load(str(out)).graph.input[0].type == onnx.load(str(FIXTURES / "mnist_cnn.onnx")).graph.input[0].type
