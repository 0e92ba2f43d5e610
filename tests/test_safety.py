"""Safety: the input is never modified, writes are atomic, outputs are not overwritten without
--force, the same inputs give the same bytes, and models over 2 GB are saved with external data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
import onnxprune.load.model as model_io
from conftest import FIXTURES, ROOT
from onnxprune.cli.main import main
from onnxprune.load.files import write_json_atomic
from onnxprune.load.runtime import session

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"
# the data-driven path: calibration statistics, global ranking, least-squares recovery
PRUNE = ["--target-macs", "0.6", "--calib", str(CALIB), "--criterion", "activation", "--scope", "global",
         "--recover", "lstsq", "--bench-rounds", "0", "-q"]



def quiet_run(tmp_path: Path) -> list:
    """Flags that keep the example recipes' own report and summary paths (the repository's out/) untouched;
    fresh names each call, since an existing report, like any output, needs --force."""
    n = len(list(tmp_path.glob("run_report*.json")))
    return ["--report", tmp_path / f"run_report{n}.json", "--summary", tmp_path / f"run_summary{n}.md", "-q"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


def test_input_files_are_never_modified(tmp_path, capsys):
    watched = [DIGITS, CALIB, FIXTURES / "digits_test.npz", ROOT / "examples" / "digits_cnn.toml"]
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in watched}
    assert run_cli(capsys, "prune", DIGITS, "-o", tmp_path / "a.onnx", *PRUNE)[0] == 0
    recipe = ROOT / "examples" / "digits_cnn.toml"
    assert run_cli(capsys, "run", recipe, "-o", tmp_path / "b.onnx", *quiet_run(tmp_path))[0] == 0
    assert run_cli(capsys, "validate", DIGITS, tmp_path / "a.onnx", "-q")[0] == 0
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in watched} == before


def test_library_never_modifies_the_model_it_is_given():
    model = onnx.load(str(DIGITS))
    before = model.SerializeToString()
    onnxprune.prune(model, target_macs=0.6, calib=str(CALIB), criterion="activation", recover="lstsq", bench_rounds=0)
    assert model.SerializeToString() == before


def test_same_inputs_and_seed_give_identical_bytes(tmp_path, capsys):
    for name in ("a.onnx", "b.onnx"):
        assert run_cli(capsys, "prune", DIGITS, "-o", tmp_path / name, *PRUNE, "--seed", "3")[0] == 0
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    for name in ("c.onnx", "d.onnx"):
        assert run_cli(capsys, "prune", DIGITS, "-o", tmp_path / name, "--ratio", "0.4", "--criterion", "random",
                       "--seed", "7", "--bench-rounds", "0", "-q")[0] == 0
    assert (tmp_path / "c.onnx").read_bytes() == (tmp_path / "d.onnx").read_bytes()
    recipe = ROOT / "examples" / "c2f_detector.toml"
    for name in ("e.onnx", "f.onnx"):
        assert run_cli(capsys, "run", recipe, "-o", tmp_path / name, *quiet_run(tmp_path))[0] == 0
    assert (tmp_path / "e.onnx").read_bytes() == (tmp_path / "f.onnx").read_bytes()


def _failing_save(monkeypatch, exc: BaseException) -> None:
    """onnx.save_model writes half a file, then fails (a full disk, a kill, Ctrl-C)."""
    def half_then_fail(proto, f, *args, **kwargs):
        Path(f).write_bytes(proto.SerializeToString()[:100])
        raise exc
    monkeypatch.setattr(onnx, "save_model", half_then_fail)


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_partial_output(tmp_path, capsys, monkeypatch, exc):
    _failing_save(monkeypatch, exc)
    out = tmp_path / "o.onnx"
    if isinstance(exc, KeyboardInterrupt):
        code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0", "-q")
        assert code == 130 and "interrupted" in err
    else:  # a full disk is not a bug: one line naming the output, exit 2
        code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0", "-q")
        assert code == 2 and "No space left" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_interrupted_overwrite_keeps_the_old_output(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"the previous model")
    _failing_save(monkeypatch, KeyboardInterrupt())
    code, _, _ = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.5", "--bench-rounds", "0", "--force", "-q")
    assert code == 130
    assert out.read_bytes() == b"the previous model" and leftovers(tmp_path) == []


def test_interrupted_report_write_leaves_nothing(tmp_path, monkeypatch):
    import onnxprune.load.files as report

    def fail(*_):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(report.os, "replace", fail)
    from onnxprune.load.destinations import WriteError
    with pytest.raises(WriteError, match="Input/output error"):
        write_json_atomic({"a": 1}, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force_for_every_writer(tmp_path, capsys):
    out = tmp_path / "o.onnx"
    out.write_bytes(b"keep me")
    for args in (["prune", DIGITS, "-o", out, "--ratio", "0.5"],
                 ["run", ROOT / "examples" / "transformer.json", "-o", out, *quiet_run(tmp_path)]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", DIGITS, "--ratio", "0.5", "--force")
    assert code == 2 and "overwrite the input" in err
    code, _, _ = run_cli(capsys, "run", ROOT / "examples" / "transformer.json", "-o", out, "--force",
                         *quiet_run(tmp_path))
    assert code == 0 and onnx.load(str(out)).graph.node


def test_models_over_2gb_are_saved_with_external_data(tmp_path, capsys, monkeypatch):
    """The >2 GB path, exercised by lowering the threshold: data beside the model, the model reloads
    and runs with the same outputs, nothing temporary is left, the in-memory model is untouched."""
    monkeypatch.setattr(model_io, "_TWO_GB", 1024)
    out = tmp_path / "big.onnx"
    code, _, err = run_cli(capsys, "prune", DIGITS, "-o", out, "--ratio", "0.3", "--bench-rounds", "0", "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert out.stat().st_size < 10_000 < (tmp_path / "big.onnx.data").stat().st_size
    external = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in external.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"big.onnx.data"}
    onnx.checker.check_model(str(out), full_check=True)
    reference = onnxprune.prune(DIGITS, 0.3, bench_rounds=0).model
    x = {"input": np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)}
    from_disk = session(str(out)).run(None, x)[0]  # ONNX Runtime reads the data file by path
    np.testing.assert_array_equal(from_disk, session(reference).run(None, x)[0])
    np.testing.assert_array_equal(session(model_io.load_model(out)).run(None, x)[0], from_disk)

    before = reference.SerializeToString()
    model_io.save_model_atomic(reference, tmp_path / "again.onnx")
    assert reference.SerializeToString() == before  # saving did not empty or redirect its tensors


def test_report_of_a_large_model_run_names_the_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(model_io, "_TWO_GB", 1024)
    code, _, _ = run_cli(capsys, "run", ROOT / "examples" / "transformer.json", "-o", tmp_path / "t.onnx",
                         "--report", tmp_path / "r.json", "-q")
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["output"] == str(tmp_path / "t.onnx")
    assert (tmp_path / "t.onnx.data").exists()
