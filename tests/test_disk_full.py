"""A full disk while writing: exit 2 with one line, no output and no temporary left, input unchanged.

The disk fills up cheaply: the child process gets a small RLIMIT_FSIZE and ignores SIGXFSZ, so a
write past the limit fails with EFBIG, as a write to a full disk fails with ENOSPC."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.load import destinations
from onnxprune.load.files import write_bytes_atomic


def tiny_mlp(path: Path) -> None:
    """334 bytes: its pruned model fits under 1,000 bytes, its report does not."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in (("w1", (4, 8)), ("w2", (8, 2)))]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                               helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run_with_file_limit(args: list[str], cwd: Path, limit: int) -> subprocess.CompletedProcess:
    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, "-m", "onnxprune", *args], cwd=cwd, preexec_fn=small_disk,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("limit, failing", [(100, "p.json"), (1000, "r.json")])
def test_prune_on_a_full_disk_leaves_nothing(tmp_path, limit, failing):
    model = tmp_path / "m.onnx"
    tiny_mlp(model)
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    proc = run_with_file_limit(["prune", "m.onnx", "-o", "out.onnx", "--ratio", "0.3", "--bench-rounds", "0",
                                "--save-plan", "p.json", "--report", "r.json", "--summary", "s.md"], tmp_path, limit)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and failing in lines[0] and "File too large" in lines[0], proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no model, plan, report, summary or temporary
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before


def test_without_a_limit_every_output_lands(tmp_path):
    tiny_mlp(tmp_path / "m.onnx")
    proc = run_with_file_limit(["prune", "m.onnx", "-o", "out.onnx", "--ratio", "0.3", "--bench-rounds", "0",
                                "--save-plan", "p.json", "--report", "r.json", "-q"], tmp_path, resource.RLIM_INFINITY)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "out.onnx", "p.json", "r.json"]
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)


def test_all_or_nothing_lands_together_or_not_at_all(tmp_path):
    with destinations.all_or_nothing():
        write_bytes_atomic(b"a", tmp_path / "a")
        assert not (tmp_path / "a").exists()  # held until the block ends
        write_bytes_atomic(b"b", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"
    with pytest.raises(RuntimeError):
        with destinations.all_or_nothing():
            write_bytes_atomic(b"c", tmp_path / "c")
            raise RuntimeError("a later write failed")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
