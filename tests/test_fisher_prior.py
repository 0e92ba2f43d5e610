"""fisher_prior (score/fisher_prior.py): fisher's scores plus a per-group weight-norm floor."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

import onnxprune
from onnxprune.score.fisher_prior import with_prior

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _dep(*sizes: int) -> SimpleNamespace:
    starts = np.cumsum((0,) + sizes)
    return SimpleNamespace(groups=[SimpleNamespace(channels=np.arange(a, b)) for a, b in zip(starts[:-1], starts[1:])])


def test_a_silent_channel_with_large_weights_outranks_a_silent_small_one():
    dep = _dep(4)
    scores = np.array([0.0, 0.0, 1.0, 3.0])   # the data sees channels 0 and 1 as free
    prior = np.array([5.0, 1.0, 1.0, 1.0])    # but channel 0's weights are large
    out = with_prior(dep, scores, prior, weight=0.5)
    assert out[0] > out[1] > 0 and np.argsort(out)[0] == 1
    assert np.argsort(out[1:]).tolist() == [0, 1, 2]  # fisher's order where the prior is level


def test_every_group_total_grows_by_the_same_factor():
    dep = _dep(3, 5)
    rng = np.random.default_rng(0)
    scores = np.r_[rng.uniform(0, 1, 3), 100 * rng.uniform(0, 1, 5)]  # groups on very different scales
    prior = rng.uniform(0.1, 9, 8)
    out = with_prior(dep, scores, prior, weight=0.5)
    for grp in dep.groups:
        assert np.isclose(out[grp.channels].sum(), 1.5 * scores[grp.channels].sum())


def test_prune_with_fisher_prior_runs_and_keeps_the_cap(tmp_path):
    r = onnxprune.prune(str(FIXTURES / "digits_cnn.onnx"), target_macs=0.8, calib=str(FIXTURES / "digits_calib.npz"),
                        bench_rounds=0, criterion="fisher_prior")
    assert r.report["options"]["criterion"] == "fisher_prior"
    assert r.report["options"]["max_layer_ratio"] == 0.5
