"""`--depth K` with `--target-latency F`: units removed first, then widths searched by measured latency,
F being a fraction of the model as given (not of the shallower one). Fixture: the tiny ResNet of
fixtures/make_depth_models.py."""

from __future__ import annotations

import sys

import numpy as np

from conftest import FIXTURES
from onnxprune import stages
from onnxprune.api import prune
from onnxprune.check.validate import check_valid
from test_cli import run_cli

sys.path.insert(0, str(FIXTURES))
from make_depth_models import tiny_resnet  # noqa: E402

SHAPES = {"image": (1, 3, 16, 16)}


def test_latency_after_depth_is_timed_against_the_model_as_given(monkeypatch):
    dense = tiny_resnet()
    seen = {}
    real = stages.search_latency

    def spy(select, model, target, threads, build, **kw):
        seen["reference"], seen["analysed"] = kw.get("reference"), model.dep.graph.model
        return real(select, model, target, threads, build, **{**kw, "rounds": 3})

    monkeypatch.setattr(stages, "search_latency", spy)
    result = prune(dense, depth=1, target_latency=0.8, input_shapes=SHAPES, bench_rounds=0, threads=1)
    # the fraction is of the user's model: the reference is it, not the model without the unit
    assert seen["reference"] is dense
    assert len(seen["analysed"].graph.node) == len(dense.graph.node) - 4  # the block: two Convs, a Relu and the Add
    report = result.report
    assert len(report["depth"]["removed"]) == 1 and report["depth"]["width_target"] == {"latency": 0.8}
    latency = report["plan"]["latency"]
    assert latency["target_latency"] == 0.8 and latency["measured_latency_ratio"] > 0
    check_valid(result.model, dense)
    feed = {"image": np.random.default_rng(0).standard_normal(SHAPES["image"]).astype(np.float32)}
    from onnxprune.load.runtime import session
    assert session(result.model).run(None, feed)[0].shape == session(dense).run(None, feed)[0].shape


def test_cli_accepts_depth_with_a_latency_target(tmp_path, capsys):
    import onnx
    path, out = tmp_path / "r.onnx", tmp_path / "o.onnx"
    onnx.save(tiny_resnet(), path)
    code, stdout, err = run_cli(capsys, "prune", path, "-o", out, "--depth", "1", "--target-latency", "0.9",
                                "--input-shape", "image:1x3x16x16", "--bench-rounds", "0")
    assert code == 0, err
    assert out.exists() and "removed 1 of" in stdout
