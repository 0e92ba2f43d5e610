"""Depth as a dimension of `onnxprune search`: levels from the model's residual units (none, and no
depth candidate, for a model without any), candidates that depend only on the seed, a depth candidate
that makes a valid smaller model the same way in any worker, and `--space` to choose the dimensions.
Fixtures: fixtures/resnet_depth.onnx (three removable blocks; fixtures/make_depth_models.py) and
fixtures/digits_cnn.onnx (none)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from test_search import CALIB, DIGITS, fake_evaluate
from onnxprune import BadInputError
from onnxprune.check.validate import check_valid
from onnxprune.cli.main import main
from onnxprune.load.runtime import session
from onnxprune.search import search
from onnxprune.search.depth_levels import DepthLevel, depth_levels, levels_from_units
from onnxprune.search.executors import LocalExecutor
from onnxprune.search.run import evaluate_candidate
from onnxprune.search.space import TARGETS, candidates, parse_space

RESNET = str(FIXTURES / "resnet_depth.onnx")
LEVELS = [DepthLevel(2, 0.94), DepthLevel(4, 0.88)]  # NudeNet's: 2 and 4 of its 6 units


@pytest.fixture(scope="module")
def resnet_calib(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("calib") / "image.npz"
    np.savez(path, image=np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32))
    return str(path)


def test_depth_candidates_follow_the_targets_and_depend_only_on_the_seed():
    chosen = candidates(16, seed=0, depths=LEVELS)
    assert chosen == candidates(16, seed=0, depths=LEVELS) and chosen != candidates(16, seed=1, depths=LEVELS)
    assert all("depth" not in c["prune"] for c in chosen[:len(TARGETS)])  # the latency range first
    deep = [c for c in chosen if "depth" in c["prune"]]
    assert len(deep) == 5 and all(not c["int8"] and c["prune"]["scope"] == "global" for c in deep)
    for c in deep:  # no pair that depth alone would undershoot
        assert c["prune"]["target_macs"] < {2: 0.94, 4: 0.88}[c["prune"]["depth"]]
    grid = candidates(10_000, seed=0, depths=LEVELS)
    assert len(grid) == len({c["label"] for c in grid}) == 7 * 4 + 13 * 4


def test_without_levels_the_candidates_are_those_of_a_search_without_depth():
    assert candidates(16, seed=2, depths=[]) == candidates(16, seed=2)
    assert [c["label"] for c in candidates(3, int8=False, scopes=False, depths=[])] == \
        [c["label"] for c in candidates(3, int8=False)]
    assert all(c["prune"]["scope"] == "global" and not c["int8"]
               for c in candidates(100, int8=False, scopes=False, depths=LEVELS))


def test_levels_are_shares_of_the_units_with_their_macs_bound():
    assert levels_from_units([], 100) == []
    assert levels_from_units([10], 100) == [DepthLevel(1, 0.9)]
    assert levels_from_units([30, 10, 20, 10, 10, 20], 1000) == [DepthLevel(2, 0.98), DepthLevel(4, 0.95)]
    levels = depth_levels(RESNET, None)
    assert [level.units for level in levels] == [1, 2] and 0.4 < levels[1].macs_kept_most < levels[0].macs_kept_most < 1
    assert depth_levels(DIGITS, CALIB) == []


class InProcess:
    """Runs the jobs in this process, one after another (no worker start-up: a fast test)."""

    def run(self, jobs, evaluate):
        for job in jobs:
            evaluate(job)
        return []

    def close(self):
        pass


def test_a_model_without_residual_units_gets_no_depth_candidate(tmp_path):
    # the 8th candidate would be a depth one if the model had removable units
    done = search(DIGITS, CALIB, tmp_path / "s", budget=8, rounds=2, evaluate=fake_evaluate, workers=InProcess())
    assert done["depth_levels"] == [] and done["settings"]["space"] == ["targets", "scopes", "depth", "int8"]
    assert not done["failed"] and len(done["candidates"]) == 8
    assert [c["label"] for c in done["candidates"]] == [c["label"] for c in candidates(8)]
    assert all("depth" not in c["spec"]["prune"] for c in done["candidates"])


def depth_jobs(tmp_path, calib: str, folders: tuple[str, ...]) -> list[dict]:
    """The first one-unit depth candidate of the resnet fixture's search, as a job per folder."""
    spec = next(c for c in candidates(40, seed=0, int8=False, depths=depth_levels(RESNET, calib))
                if c["prune"].get("depth") == 1)
    for folder in folders:
        (tmp_path / folder).mkdir()
    return [{"model": RESNET, "calib": calib, "data": None, "spec": spec, "out": str(tmp_path / folder),
             "input_shapes": None, "metric": None} for folder in folders]


def test_a_depth_candidate_is_a_valid_smaller_model_made_alike_by_parallel_workers(tmp_path, resnet_calib):
    jobs = depth_jobs(tmp_path, resnet_calib, ("a", "b"))
    assert LocalExecutor(2).run(jobs, evaluate_candidate) == []  # two workers at once, as --workers 2
    spec = jobs[0]["spec"]
    summary = json.loads((tmp_path / "a" / f"{spec['id']}.json").read_text())
    dense, model = onnx.load(RESNET), onnx.load(str(tmp_path / "a" / summary["model_file"]))
    check_valid(model, dense)
    assert len(summary["depth_removed"]) == 1 and summary["macs"] < spec["prune"]["target_macs"] + 0.03
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == len([n for n in dense.graph.node if n.op_type == "Add"]) - 1
    feed = {"image": np.load(resnet_calib)["image"][:2]}
    assert np.isfinite(session(model).run(None, feed)[0]).all()
    made = [(tmp_path / w / summary["model_file"]).read_bytes() for w in ("a", "b")]
    assert made[0] == made[1]  # the same bytes from either worker
    assert json.loads((tmp_path / "b" / f"{spec['id']}.json").read_text())["quality"] == summary["quality"]


@pytest.mark.parametrize("space, message", [("targets,width", "unknown dimension 'width'"),
                                            ("scopes,depth", "include 'targets'")])
def test_space_errors_are_one_line_before_any_work(tmp_path, capsys, space, message):
    with pytest.raises(BadInputError, match=message):
        parse_space(space)
    out = tmp_path / "s"
    assert main(["search", DIGITS, "--calib", CALIB, "--budget", "1", "-o", str(out), "--space", space]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_space_orders_its_dimensions_and_no_int8_removes_one():
    assert parse_space(" int8, targets ,depth") == ("targets", "depth", "int8")
    assert parse_space(None) == ("targets", "scopes", "depth", "int8")
