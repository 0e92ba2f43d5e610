"""Calibration views (onnxprune/load/views.py): deterministic, lazy, shape- and dtype-keeping, discrete
inputs untouched; with few samples they bring the pruned model closer to the dense one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxprune
from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.load.rows import Rows
from onnxprune.load.views import ViewRows, calibration_views, parse_kinds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KINDS = ("crop", "scale", "mix")


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 1, 3, 16, 16)).astype(np.float32)


class CountingRows(Rows):
    """An in-memory Rows that records which rows were read."""

    def __init__(self, arr: np.ndarray):
        self.arr, self.shape, self.dtype, self.reads = arr, arr.shape, arr.dtype, []

    def read(self, idx: np.ndarray) -> np.ndarray:
        self.reads.append(np.asarray(idx).tolist())
        return self.arr[idx]


def test_views_are_deterministic_and_independent_of_the_batching():
    base = _images()
    a, b = ViewRows(base, 4, KINDS, seed=3), ViewRows(base, 4, KINDS, seed=3)
    whole = a[np.arange(24)]
    assert whole.shape == (24, 1, 3, 16, 16) and whole.dtype == np.float32
    one_by_one = np.stack([b[i] for i in range(24)])
    assert np.array_equal(whole, one_by_one)
    assert np.array_equal(whole[:6], base)  # view 0 is the sample itself, first
    assert all(not np.allclose(whole[6 * v + i], base[i]) for v in (1, 2, 3) for i in range(6))
    other = ViewRows(base, 4, KINDS, seed=4)[np.arange(24)]
    assert not np.allclose(other[6:], whole[6:])


def test_mix_blends_two_samples_within_their_range():
    base = np.stack([np.full((1, 2, 4, 4), float(i + 2), np.float32) for i in range(5)])  # not 0/1
    views = ViewRows(base, 3, ("mix",), seed=0)[np.arange(15)]
    for i in range(5, 15):
        own = i % 5 + 2
        value = float(views[i].mean())
        assert np.all(views[i] == views[i].flat[0])  # a blend of two constant images is constant
        assert value != own and 2 <= value <= 6 and abs(value - own) <= 0.5 * 4 + 1e-6


def test_discrete_inputs_and_one_hot_codes_are_untouched():
    tokens = np.random.default_rng(0).integers(0, 256, (5, 1, 64)).astype(np.int32)
    onehot = np.eye(4, dtype=np.float32)[np.random.default_rng(1).integers(0, 4, (5, 1, 3, 8))]  # (5,1,3,8,4)
    data = calibration_views(Dataset({"bytes": tokens, "code": onehot}), 4, KINDS, seed=0)
    assert len(data) == 20
    got = data.batch(0, 20)
    assert got["bytes"].dtype == np.int32 and np.array_equal(got["bytes"], np.tile(tokens[:, 0], (4, 1)))
    assert np.array_equal(got["code"], np.tile(onehot[:, 0], (4, 1, 1, 1)))
    only_tokens = Dataset({"bytes": tokens})
    assert calibration_views(only_tokens, 4, KINDS) is only_tokens  # copies would add nothing


def test_splice_takes_one_span_of_the_last_axis_from_a_partner_in_every_input():
    n, length = 6, 64
    ids = (np.arange(n)[:, None, None] * 100 + np.arange(length)).astype(np.int64)  # (6, 1, 64): sample*100 + pos
    mask = np.ones((n, 1, length), np.int64)
    mask[1, 0, 40:] = 0  # sample 1 is padded: its mask travels with its ids
    short = np.arange(n, dtype=np.int64)[:, None, None] + np.zeros((1, 1, 2), np.int64)  # (6, 1, 2): no sequence
    data = calibration_views(Dataset({"ids": ids, "mask": mask, "len": short}), 3, ("splice",), seed=0)
    assert data is not None and len(data) == 3 * n
    got = data.batch(0, 3 * n)
    assert got["ids"].dtype == np.int64 and np.array_equal(got["ids"][:n], ids[:, 0])  # view 0: the samples
    assert np.array_equal(got["len"], np.tile(short[:, 0], (3, 1)))  # too short to splice: untouched
    for i in range(n, 3 * n):
        own, row = i % n, got["ids"][i]
        sample, pos = row // 100, row % 100
        assert np.array_equal(pos, np.arange(length))  # every position keeps its place
        taken = np.flatnonzero(sample != own)
        assert 0.1 * length - 1 <= len(taken) <= 0.5 * length + 1  # one span of 10-50% of the axis
        assert np.array_equal(taken, np.arange(taken[0], taken[-1] + 1))  # contiguous
        partner = int(sample[taken[0]])
        assert np.all(sample[taken] == partner) and partner != own
        assert np.array_equal(got["mask"][i], np.where(sample == own, mask[own, 0], mask[partner, 0]))
    assert not np.array_equal(ViewRows(ids, 3, ("splice",), 0)[np.arange(18)], ViewRows(ids, 3, ("splice",), 1)[np.arange(18)])


def test_views_read_only_the_rows_a_batch_needs():
    base = CountingRows(_images(8))
    views = ViewRows(base, 4, KINDS, seed=0)
    views[np.arange(10, 13)]  # three views (view 1 of samples 2, 3, 4) and their mix partners
    assert len(base.reads) == 1 and 3 <= len(base.reads[0]) <= 6


def test_few_samples_views_bring_the_pruned_model_closer_to_dense(tmp_path):
    """digits CNN, 8 calibration samples: the classifier Gemm re-solved on 8 rows falls back to ridge; with
    4 views of each sample the pruned model's logits are measurably closer to the dense model's."""
    with np.load(FIXTURES / "digits_calib.npz") as f:
        np.savez(tmp_path / "c8.npz", input=f["input"][:8])
    with np.load(FIXTURES / "digits_test.npz") as f:
        x = f["input"][:200]
    dense = ort.InferenceSession(str(FIXTURES / "digits_cnn.onnx")).run(None, {"input": x})[0]
    errors = {}
    for views in (1, 4):
        r = onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.5, calib=str(tmp_path / "c8.npz"),
                            bench_rounds=0, calib_views=views)
        out = ort.InferenceSession(r.model.SerializeToString()).run(None, {"input": x})[0]
        assert np.all(np.isfinite(out)) and out.shape == dense.shape
        errors[views] = float(np.mean((out - dense) ** 2) / np.var(dense))
        assert r.report["fidelity"]["samples"] == 8  # the report measures the samples, not their views
        assert r.report["options"].get("calib_views", 1) == views
    assert errors[4] < 0.75 * errors[1], errors


def test_bad_views_fail_with_one_line(tmp_path):
    with pytest.raises(BadInputError, match="--calib-views"):
        onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.5, calib=str(FIXTURES / "digits_calib.npz"),
                        calib_views=0)
    with pytest.raises(BadInputError, match="blur"):
        parse_kinds("crop,blur")
    out = tmp_path / "out.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxprune", "prune", str(FIXTURES / "digits_cnn.onnx"), "-o", str(out),
                           "--target-macs", "0.5", "--calib", str(FIXTURES / "digits_calib.npz"), "--calib-views", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and not out.exists()
    assert len(proc.stderr.strip().splitlines()) == 1 and "--calib-views" in proc.stderr


def test_views_are_the_default_with_data_at_deep_targets_only():
    from onnxprune.options import PruneOptions, Target

    def views(has_data: bool, weight_bytes: int = 0, **target) -> int:
        return PruneOptions(target=Target(**target)).resolved(has_data, weight_bytes).calib_views

    assert views(True, macs=0.5) == 4 and views(True, ratio=0.3) == 4  # (1 - 0.3)^2 = 0.49 of the MACs
    assert views(True, macs=0.8) == 1 and views(False, macs=0.5) == 1
    assert views(True, 1 << 30, macs=0.5) == 1  # big models rank by reconstruction, without views
    other = PruneOptions(target=Target(macs=0.5), criterion="activation", recover="lstsq").resolved(True)
    assert other.calib_views == 1  # views were measured with fisher and sequential recovery only
    kept = PruneOptions(target=Target(macs=0.5), calib_views=1).resolved(True)
    assert kept.calib_views == 1


@pytest.mark.parametrize("views_for, scored, solved", [("all", 32, 32), ("recovery", 8, 32), ("scoring", 32, 8)])
def test_views_for_decides_which_step_reads_the_views(monkeypatch, tmp_path, views_for, scored, solved):
    """`calib_views_for`: the channel scores and the sequential re-solve each read the 4 views of the 8
    samples (32 rows) or the samples alone (8), as asked."""
    import onnxprune.stages as stages
    seen: dict[str, int] = {}
    real_score, real_reconstruct = stages.score, stages.reconstruct

    def score(dep, name, data=None, **kw):
        seen["scored"] = len(data)
        return real_score(dep, name, data=data, **kw)

    def reconstruct(dep, removed, data, **kw):
        seen["solved"] = len(data)
        return real_reconstruct(dep, removed, data, **kw)

    monkeypatch.setattr(stages, "score", score)
    monkeypatch.setattr(stages, "reconstruct", reconstruct)
    with np.load(FIXTURES / "digits_calib.npz") as f:
        np.savez(tmp_path / "c8.npz", input=f["input"][:8])
    onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.8, calib=str(tmp_path / "c8.npz"), bench_rounds=0,
                    calib_views=4, calib_views_for=views_for)
    assert seen == {"scored": scored, "solved": solved}
