"""`compare`: every schedule as a row, honest speed and energy columns, JSON, PNG and command-line errors."""

from __future__ import annotations

import json
import sys

import onnx
import pytest

from conftest import FIXTURES
from onnxprune.check import energy
from onnxprune.cli.main import main
from onnxprune.load.data import load_npz
from onnxprune.recover.schedules import ScheduleOptions, TrainConfig
from onnxprune.recover.schedules.compare import ORDER, compare
from onnxprune.recover.schedules.report import format_compare


@pytest.fixture(scope="module")
def short_compare():
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    train = load_npz(FIXTURES / "digits_train.npz", {"input": 4}).take(192)
    test = load_npz(FIXTURES / "digits_test.npz", {"input": 4})
    options = ScheduleOptions(epochs=2, train=TrainConfig(lr=3e-3, threads=1))
    return compare(model, train, test, options, rounds=5, repeat=5, threads=1)


def test_short_compare_on_the_digits_cnn_has_every_row(short_compare):
    rows = short_compare.report["rows"]
    assert [r["schedule"] for r in rows] == list(ORDER)
    keys = {"accuracy", "accuracy_delta", "sparsity", "params_nonzero", "zip_bytes", "latency_ms", "latency_ratio",
            "energy_uj", "energy_kind", "energy_ideal_uj", "macs", "macs_nonzero"}
    for row in rows:
        assert keys <= set(row), row["schedule"]
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_ms"] > 0 and row["energy_uj"] > 0
    by = {r["schedule"]: r for r in rows}
    assert by["dense"]["accuracy_delta"] == 0 and by["dense"]["sparsity"] == {"conv": 0.0, "linear": 0.0}
    for name in ("pre", "in", "post", "set"):
        assert by[name]["sparsity"]["conv"] >= 0.5 - 1e-3 and by[name]["sparsity"]["linear"] >= 0.8 - 1e-3
        assert by[name]["macs"] == by["dense"]["macs"]           # dense kernels: the same work
        assert by[name]["macs_nonzero"] < by["dense"]["macs"]
        assert by[name]["zip_bytes"] < by["dense"]["zip_bytes"]
    structured = by["post-structured"]
    assert structured["params"] < by["dense"]["params"] and structured["macs"] < by["dense"]["macs"]
    assert len(short_compare.results) == len(rows)


def test_energy_is_labelled_an_estimate_without_rapl(short_compare):
    report = short_compare.report
    if report["energy"]["kind"] == "estimate":
        assert all(r["energy_kind"] == "estimate" for r in report["rows"])
        assert "ESTIMATE" in report["energy"]["note"] and "W per busy core" in report["energy"]["note"]
    text = format_compare(report)
    assert "dense kernels" in text and "Energy:" in text
    assert len(text.splitlines()[0].split("|")) == 16  # the header has every column


def test_rapl_counters_are_used_when_readable(tmp_path, monkeypatch, short_compare):
    from onnxprune.recover.schedules.compare import measure_results

    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "energy_uj").write_text("1000\n")
    monkeypatch.setattr(energy, "POWERCAP", tmp_path)
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    test = load_npz(FIXTURES / "digits_test.npz", {"input": 4})
    results = short_compare.results[:2]
    report = measure_results(model, results, [0.0, 0.0], test, ScheduleOptions(epochs=2), rounds=2, repeat=2)
    assert report["energy"]["kind"] == "rapl"
    assert all(r["energy_kind"] == "rapl" for r in report["rows"])


def test_compare_command_writes_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "r.json", tmp_path / "p.png"
    args = ["compare", str(FIXTURES / "digits_mlp_init.onnx"), "--data", str(FIXTURES / "digits_calib.npz"),
            "--val", str(FIXTURES / "digits_test.npz"), "--epochs", "2", "--reinit", "--rounds", "3",
            "--threads", "1", "--json", str(out_json), "--plot", str(out_png), "--save-dir", str(tmp_path / "models")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "SET" in printed and "Post-Training (channels)" in printed
    report = json.loads(out_json.read_text())
    assert report["schema"] == "onnxprune.compare/1" and len(report["rows"]) == 6
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.stem for p in (tmp_path / "models").iterdir()) == sorted(ORDER)
    assert main(args) == 2  # outputs exist, no --force
    assert "already exists" in capsys.readouterr().err


def test_plot_without_matplotlib_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ["compare", str(FIXTURES / "digits_mlp_init.onnx"), "--data", str(FIXTURES / "digits_calib.npz"),
            "--val", str(FIXTURES / "digits_test.npz"), "--plot", str(tmp_path / "p.png")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "matplotlib" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


def test_unknown_schedule_in_the_list_is_a_usage_error(tmp_path, capsys):
    args = ["compare", str(FIXTURES / "digits_mlp_init.onnx"), "--data", str(FIXTURES / "digits_calib.npz"),
            "--val", str(FIXTURES / "digits_test.npz"), "--schedules", "set,lottery"]
    assert main(args) == 2
    assert "lottery" in capsys.readouterr().err
