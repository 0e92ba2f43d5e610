"""Calibration data read a batch at a time (load/rows.py): the same samples, the same plan and the same
pruned weights as the in-memory path; corrupt or truncated members fail in one line (exit 2)."""

from __future__ import annotations

import zipfile

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxprune
from conftest import FIXTURES
from onnxprune.cli import main as cli
from onnxprune.load import npz
from onnxprune.load.data import load_npz
from onnxprune.load.rows import Rows
from onnxprune.score.calibration import ImageOptions, load_calibration

MODEL = FIXTURES / "digits_cnn.onnx"


def _write(path, compressed: bool, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.fixture
def samples():
    z = np.load(FIXTURES / "digits_calib.npz")
    return z["input"][:48].copy()


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_lazy_rows_read_what_the_file_holds(tmp_path, monkeypatch, samples, compressed):
    monkeypatch.setattr(npz, "LAZY_BYTES", 0)
    data = load_npz(_write(tmp_path / "c.npz", compressed, input=samples), {"input": 4})  # batch-axis form
    arr, stacked = data.inputs["input"], samples[:, None]
    assert isinstance(arr, Rows) and arr.shape == stacked.shape
    np.testing.assert_array_equal(arr[[5, 6, 7, 2, 40]], stacked[[5, 6, 7, 2, 40]])  # forward, back, forward
    np.testing.assert_array_equal(arr[3], stacked[3])
    np.testing.assert_array_equal(arr[2:5, 0, 0, 1], stacked[2:5, 0, 0, 1])
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in data.batches(8)]), samples)
    head = data.take(10).inputs["input"]
    assert isinstance(head, Rows) and len(head) == 10
    np.testing.assert_array_equal(head[9:], stacked[9:10])
    assert len(load_npz(tmp_path / "c.npz", {"input": 4}, limit=7)) == 7


def _prune(model, calib):
    r = onnxprune.prune(model, target_macs=0.7, calib=str(calib), bench_rounds=0)
    return r.plan.removed.copy(), {t.name: numpy_helper.to_array(t) for t in r.model.graph.initializer}


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_lazy_calibration_gives_the_same_plan_and_weights(tmp_path, monkeypatch, samples, compressed):
    calib = _write(tmp_path / "c.npz", compressed, input=samples)
    model = onnx.load(MODEL)
    removed, weights = _prune(model, calib)  # in memory: the file is below LAZY_BYTES
    monkeypatch.setattr(npz, "LAZY_BYTES", 0)
    assert isinstance(load_npz(calib, {"input": 4}).inputs["input"], Rows)
    lazy_removed, lazy_weights = _prune(model, calib)
    np.testing.assert_array_equal(lazy_removed, removed)
    assert removed.any() and lazy_weights.keys() == weights.keys()
    for name, value in weights.items():
        np.testing.assert_allclose(lazy_weights[name], value, rtol=1e-6, atol=1e-7, err_msg=name)


def _cut(path, keep: int):
    path.write_bytes(path.read_bytes()[:keep])


def _flip_deflate(path):
    """A byte in the middle of a deflated member's data changed: its stream or CRC fails."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("input.npy")
    start = info.header_offset + 30 + len(info.filename) + 20  # inside the compressed data
    mid = start + info.compress_size // 2
    raw[mid:mid + 8] = bytes(b ^ 0xFF for b in raw[mid:mid + 8])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncated_stored", "corrupt_deflated", "short_member"])
def test_broken_lazy_member_exits_2_in_one_line(tmp_path, monkeypatch, samples, capsys, damage):
    monkeypatch.setattr(npz, "LAZY_BYTES", 0)
    calib = _write(tmp_path / "c.npz", damage == "corrupt_deflated", input=samples)
    if damage == "truncated_stored":
        _cut(calib, calib.stat().st_size // 2)  # the central directory is gone too: not a zip
    elif damage == "corrupt_deflated":
        _flip_deflate(calib)
    else:  # a valid zip whose member declares more rows than it holds
        with zipfile.ZipFile(calib, "w") as zf:
            with zf.open("input.npy", "w") as f:
                np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False,
                                                         "shape": (480, 1, 8, 8)})
                f.write(samples.tobytes())
    model = tmp_path / "m.onnx"
    model.write_bytes(MODEL.read_bytes())
    before = calib.read_bytes()
    code = cli.main(["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--target-macs", "0.7", "--calib",
                     str(calib), "--bench-rounds", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "c.npz" in err and not (tmp_path / "o.onnx").exists() and calib.read_bytes() == before


def test_image_folder_is_decoded_per_batch(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p, "L").save(tmp_path / f"{i}.png")
    data = load_calibration(tmp_path, {"input": 4}, ImageOptions(grayscale=True), limit=4)
    arr = data.inputs["input"]
    assert isinstance(arr, Rows) and arr.shape == (4, 1, 1, 8, 8)
    np.testing.assert_allclose(np.concatenate([b["input"] for b in data.batches(3)]), pixels[:4, None] / 255.0, rtol=1e-6)


def test_presliced_weights_give_the_same_model():
    """Sequential recovery handing its weights over already cut (no dense copy kept) writes the same model."""
    from onnxprune.apply.rewrite import apply_plan
    from onnxprune.options import PruneOptions, Target
    from onnxprune.recover.sequential import reconstruct
    from onnxprune.stages import choose_plan, prepare

    prep = prepare(onnx.load(MODEL), PruneOptions(Target(macs=0.7), bench_rounds=0), str(FIXTURES / "digits_calib.npz"))
    plan = choose_plan(prep)
    dense = reconstruct(prep.dep, plan.removed, prep.data.take(64))
    presliced: dict = {}
    rest = reconstruct(prep.dep, plan.removed, prep.data.take(64), presliced=presliced)
    assert presliced and not set(presliced) & set(rest)
    a, b = apply_plan(plan, dense), apply_plan(plan, rest, presliced)
    got = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    for t in a.graph.initializer:
        np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t), err_msg=t.name)
