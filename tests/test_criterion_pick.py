"""The held-out check between criteria (tools/criterion_pick.py): the samples split in two disjoint
halves, each candidate pruning on one and judged on the other, the smaller held-out error winning."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from onnxprune.load.data import Dataset
from onnxprune.options import PruneOptions, Target
from onnxprune.stages import as_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import criterion_pick  # noqa: E402
from criterion_pick import held_out_error, pick_criterion, split  # noqa: E402

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"


def _data(n: int = 32) -> Dataset:
    import onnx
    return as_dataset(str(CALIB), onnx.load(str(DIGITS)), n, None)


def _options(**kw) -> PruneOptions:
    return PruneOptions(target=Target(macs=0.5), round_to=1, **{"bench_rounds": 0, **kw})


def test_the_halves_are_disjoint_alternate_and_cover_the_samples():
    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 1, 3)
    fit, held = split(Dataset({"x": x}, np.arange(7)))
    assert fit.inputs["x"][:, 0, 0].tolist() == [0, 6, 12, 18]  # samples 0, 2, 4, 6
    assert held.inputs["x"][:, 0, 0].tolist() == [3, 9, 15]     # samples 1, 3, 5
    assert fit.labels is None and held.labels is None           # the check is label-free


def test_every_output_counts_alike_whatever_its_scale():
    fidelity = {"rel_l2": 0.01, "outputs": {"boxes": {"rel_l2": 0.01}, "scores": {"rel_l2": 0.5}}}
    assert held_out_error(fidelity) == pytest.approx(0.255)  # not the overall 0.01 the boxes dominate
    assert held_out_error({"rel_l2": 0.2}) == 0.2
    assert held_out_error({}) == math.inf


def test_a_data_ranking_beats_a_random_one_on_the_held_half():
    from onnxprune.api import prune

    pick = pick_criterion(str(DIGITS), _options(), _data(), prune, candidates=("random", "reconstruction"))
    assert pick.criterion == "reconstruction"
    assert pick.errors["reconstruction"] < pick.errors["random"]
    assert (pick.fit_samples, pick.held_samples) == (16, 16)


def test_the_pick_is_the_candidate_with_the_smaller_error_and_a_tie_keeps_the_first():
    errors = {"fisher": 0.3, "reconstruction": 0.2}

    class Result:
        def __init__(self, err):
            self.report = {"fidelity": {"outputs": {"y": {"rel_l2": err}}}}

    seen = []

    def fake_prune(model, calib, eval_data, options):
        seen.append((options.criterion, len(calib), len(eval_data), options.bench_rounds))
        return Result(errors[options.criterion])

    pick = pick_criterion("m.onnx", _options(bench_rounds=20), _data(10), fake_prune)
    assert pick.criterion == "reconstruction"
    assert seen == [("fisher", 5, 5, 0), ("reconstruction", 5, 5, 0)]
    errors["fisher"] = 0.2
    assert pick_criterion("m.onnx", _options(), _data(10), fake_prune).criterion == "fisher"


def test_a_candidate_that_cannot_run_loses_and_too_few_samples_skip_the_check():
    from onnxprune.errors import BadInputError

    class Result:
        report = {"fidelity": {"outputs": {"y": {"rel_l2": 0.9}}}}

    def fake_prune(model, calib, eval_data, options):
        if options.criterion == "fisher":
            raise BadInputError("no gradients")
        return Result()

    pick = pick_criterion("m.onnx", _options(), _data(8), fake_prune)
    assert pick.criterion == "reconstruction" and pick.errors["fisher"] == math.inf
    few = pick_criterion("m.onnx", _options(), _data(criterion_pick.MIN_SAMPLES - 1), fake_prune)
    assert few.criterion == "fisher" and few.errors == {} and few.held_samples == 0
