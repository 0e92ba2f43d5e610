"""Temporary folders of a killed run are removed by the next run, and nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from onnxprune.load import workdirs

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to tell live owners")


def _env(root) -> dict:
    return {**os.environ, "TMPDIR": str(root)}


def test_the_folders_of_a_killed_run_are_swept_by_the_next_one(tmp_path):
    # a run that makes its work folder (as every pruning of a large model does), then is killed
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from onnxprune.load.external import WorkFile
        WorkFile("weights")
        print(WorkFile._folder, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    left = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert os.path.isdir(left) and os.path.basename(left).startswith("onnxprune-work-")

    made = subprocess.run([sys.executable, "-c", "from onnxprune.load import workdirs; print(workdirs.private_dir('x'))"],
                          capture_output=True, text=True, env=_env(tmp_path), check=True).stdout.strip()
    assert not os.path.exists(left)
    assert os.path.isdir(made)  # its own folder is kept: the caller removes it


def test_live_owners_and_unmarked_folders_are_left_alone(tmp_path):
    mine = tmp_path / "onnxprune-live-1"
    mine.mkdir()
    (mine / "owner").write_text(workdirs._me())
    unmarked = tmp_path / "onnxprune-old-2"  # an older onnxprune's, or another program's
    unmarked.mkdir()
    (unmarked / "model.onnx").write_bytes(b"x")
    reused = tmp_path / "onnxprune-reused-3"  # its pid is alive again, but as another process
    reused.mkdir()
    (reused / "owner").write_text(f"{os.getpid()} 1")
    other = tmp_path / "unrelated-4"
    other.mkdir()
    (other / "owner").write_text("999999999 1")

    removed = workdirs.sweep(str(tmp_path))

    assert removed == [str(reused)]
    assert mine.is_dir() and (unmarked / "model.onnx").exists() and other.is_dir()


def test_a_scoped_folder_is_gone_after_its_block(tmp_path, monkeypatch):
    monkeypatch.setattr(workdirs.tempfile, "tempdir", str(tmp_path))
    with workdirs.PrivateDir("t") as folder:
        assert open(os.path.join(folder, "owner")).read() == workdirs._me()
    assert not os.path.exists(folder)
