"""Depth: residual blocks found by structure (graph/residual.py), removed exactly (apply/remove_blocks.py),
chosen by block influence and measured fidelity (select/depth.py), composed with width (depth_stage.py).

The oracle: removing a block gives the model whose residual branch is zero, i.e. the original with the
block's last projection (weight and bias) set to zero. Fixtures: fixtures/make_depth_models.py (a 4-layer
pre-norm transformer, a tiny ResNet with a projected shortcut and a broadcast Add, neither a block) and
the committed random-init Llama exports of fixtures/transformers/.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from test_cli import assert_one_line_error, run_cli
from onnxprune.api import prune
from onnxprune.apply.remove_blocks import remove_blocks
from onnxprune.check.validate import check_valid
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import find_blocks, units
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.report.schema import check

sys.path.insert(0, str(FIXTURES))
from make_depth_models import (LAYER_PROJECTIONS, LAYERS, NOT_BLOCKS, RESNET_BLOCKS,  # noqa: E402
                               prenorm_transformer, tiny_resnet)

SHAPES = {"x": (1, 8, 16)}
LLAMA = FIXTURES / "transformers"
LLAMA_SHAPES = {"input_ids": (1, 16), "attention_mask": (1, 16)}


def zeroed(model: onnx.ModelProto, names) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in names:
            init.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(init)), init.name))
    return out


def outputs(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return session(model).run(None, feed)


def params_of(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}


def tokens(n: int, seed: int = 0) -> Dataset:
    return Dataset({"x": np.random.default_rng(seed).standard_normal((n, *SHAPES["x"])).astype(np.float32)})


def test_blocks_are_the_residual_adds_with_matching_shapes():
    g = ModelGraph(tiny_resnet(), {"image": (1, 3, 16, 16)})
    names = [g.nodes[b.add].name for b in find_blocks(g)]
    assert names == list(RESNET_BLOCKS)  # the projected shortcut and the broadcast Add are not blocks
    assert not set(names) & set(NOT_BLOCKS)
    assert units(g)[0] == "block"
    kind, layers = units(ModelGraph(prenorm_transformer(), SHAPES))
    assert kind == "layer" and len(layers) == LAYERS
    assert [[b.attention for b in u.blocks] for u in layers] == [[True, False]] * LAYERS
    assert [u.name for u in layers] == [f"/layers.{i}" for i in range(LAYERS)]


@pytest.mark.parametrize("layer", range(LAYERS))
def test_removing_a_layer_equals_zeroing_its_branches(layer):
    model = prenorm_transformer()
    g = ModelGraph(model, SHAPES)
    _, layers = units(g)
    small = remove_blocks(g, layers[layer].blocks)
    check_valid(small, model)
    feed = {"x": tokens(1, seed=layer).inputs["x"][0]}
    oracle = zeroed(model, [n for pair in LAYER_PROJECTIONS[layer] for n in pair])
    assert np.abs(outputs(small, feed)[0] - outputs(oracle, feed)[0]).max() < 1e-5
    assert np.abs(outputs(small, feed)[0] - outputs(model, feed)[0]).max() > 1e-2  # the layer did something
    # exactly the layer's 29 nodes (22 attention, 7 FFN) and its 16 initializers go; nothing else
    prefix = f"/layers.{layer}/"
    assert len(small.graph.node) == len(model.graph.node) - 29
    assert not any(n.name.startswith(prefix) for n in small.graph.node)
    before, after = params_of(model), params_of(small)
    assert set(before) - set(after) == {n for n in before if n.startswith(f"l{layer}.")}
    assert sum(before.values()) - sum(after.values()) == sum(v for n, v in before.items() if n.startswith(f"l{layer}."))


@pytest.mark.parametrize("add", list(RESNET_BLOCKS))
def test_removing_a_resnet_block_equals_zeroing_its_last_conv(add):
    model = tiny_resnet()
    g = ModelGraph(model, {"image": (1, 3, 16, 16)})
    block = next(b for b in find_blocks(g) if g.nodes[b.add].name == add)
    small = remove_blocks(g, [block])
    check_valid(small, model)
    feed = {"image": np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)}
    assert np.abs(outputs(small, feed)[0] - outputs(zeroed(model, RESNET_BLOCKS[add]), feed)[0]).max() < 1e-5
    assert len(small.graph.node) == len(model.graph.node) - 4  # conv, relu, conv, add (the Relu after stays)
    stem = add.split("/")[0]
    assert set(params_of(model)) - set(params_of(small)) == {f"{stem}.conv{i}.{k}" for i in (1, 2) for k in "wb"}


def test_depth_removes_the_layer_that_matters_least():
    model = prenorm_transformer(quiet_layer=2)
    result = prune(model, depth=1, calib=tokens(16), bench_rounds=0)
    depth = result.report["depth"]
    assert depth["unit"] == "layer" and [r["name"] for r in depth["removed"]] == ["/layers.2"]
    assert min(depth["scores"], key=lambda r: r["influence"])["name"] == "/layers.2"
    assert result.report["fidelity"]["cosine"] > 0.9999
    assert result.report["plan"]["removed"] == 0
    before, after = result.report["before"], result.report["after"]
    assert depth["params_kept"] == pytest.approx(after["params"] / before["params"], abs=1e-6)
    assert depth["macs_kept"] == pytest.approx(after["macs"] / before["macs"], abs=1e-6)
    check({**result.report, "gates": []})  # the CLI adds the gates


def test_depth_and_macs_target_compose():
    model = prenorm_transformer()
    result = prune(model, depth=1, target_macs=0.5, calib=tokens(16), bench_rounds=0, round_to=1)
    report = result.report
    kept = report["after"]["macs"] / report["before"]["macs"]
    assert abs(kept - 0.5) < 0.03, kept
    depth = report["depth"]
    assert len(depth["removed"]) == 1 and depth["macs_kept"] == pytest.approx(0.75, abs=0.01)
    assert depth["width_target"]["macs"] == pytest.approx(0.5 / depth["macs_kept"])
    assert report["plan"]["removed"] > 0 and report["options"]["target_macs"] == 0.5
    check_valid(result.model, model)


def test_depth_alone_meets_a_loose_target_without_width():
    result = prune(prenorm_transformer(), depth=2, target_params=0.9, calib=tokens(8), bench_rounds=0)
    assert result.report["depth"]["width_target"] is None and result.report["plan"]["removed"] == 0
    assert len(result.report["depth"]["removed"]) == 2


def test_resnet_depth_two_without_calib_uses_synthetic_inputs():
    result = prune(tiny_resnet(), depth=2, input_shapes={"image": (1, 3, 16, 16)}, bench_rounds=0)
    depth = result.report["depth"]
    assert depth["unit"] == "block" and depth["data"] == "synthetic" and depth["samples"] == 8
    assert {r["adds"][0] for r in depth["removed"]} < set(RESNET_BLOCKS)
    assert len(result.model.graph.node) == len(tiny_resnet().graph.node) - 8


@pytest.mark.parametrize("name", ["llama_gqa.onnx", "llama_gqa_dynamo.onnx"])
def test_llama_depth_one_removes_one_decoder_layer(name):
    model = onnx.load(str(LLAMA / name))
    result = prune(model, depth=1, input_shapes=LLAMA_SHAPES, bench_rounds=0)
    depth = result.report["depth"]
    assert depth["unit"] == "layer" and depth["candidates"] == 2 and len(depth["removed"]) == 1
    assert len(depth["removed"][0]["adds"]) == 2  # the attention and the MLP residual of one decoder layer
    check_valid(result.model, model)
    # the oracle: the dense model with that layer's o_proj and down_proj zeroed
    from test_gqa import projections
    layer = [r["name"] for r in depth["scores"]].index(depth["removed"][0]["name"])
    names = {projections(model)[layer][k] for k in ("o", "down")}
    feed = {"input_ids": np.arange(16, dtype=np.int64)[None] % 100, "attention_mask": np.ones((1, 16), np.int64)}
    gap = np.abs(outputs(result.model, feed)[0] - outputs(zeroed(model, names), feed)[0]).max()
    assert gap < 1e-4, gap
    weights = {projections(model)[layer][k] for k in ("q", "k", "v", "o", "gate", "up", "down")}
    assert weights <= set(params_of(model)) - set(params_of(result.model))  # the layer's projections are gone
    assert not (set(projections(model)[1 - layer].values()) - set(params_of(result.model)))  # the other stays


def test_cli_depth_errors_are_one_line_and_leave_input(tmp_path, capsys):
    path = tmp_path / "t.onnx"
    onnx.save(prenorm_transformer(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "o.onnx"
    code, _, err = run_cli(capsys, "prune", path, "-o", out, "--depth", "5", "--input-shape", "x:1x8x16")
    assert code == 2
    assert_one_line_error(err, "--depth 5", "only 4 removable layers")
    code, _, err = run_cli(capsys, "prune", FIXTURES / "mlp.onnx", "-o", out, "--depth", "1")
    assert code == 2
    assert_one_line_error(err, "no removable residual blocks")
    assert not out.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_cli_depth_writes_model_and_report(tmp_path, capsys):
    path, out, report = tmp_path / "t.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(prenorm_transformer(quiet_layer=1), path)
    np.savez(tmp_path / "calib.npz", x=tokens(8).inputs["x"][:, 0])
    code, stdout, _ = run_cli(capsys, "prune", path, "-o", out, "--depth", "1", "--calib", tmp_path / "calib.npz",
                              "--bench-rounds", "0", "--report", report)
    assert code == 0 and "removed 1 of 4 residual layers: /layers.1" in stdout
    import json
    document = json.loads(report.read_text())
    check(document)
    assert document["options"]["depth"] == 1 and document["input"] == str(path)
    assert len(onnx.load(str(out)).graph.node) == len(prenorm_transformer().graph.node) - 29


def test_remove_blocks_pass_in_a_pipeline():
    from onnxprune.passes import PassContext, Pipeline, RemoveBlocks, Validate, create_pass
    model = prenorm_transformer(quiet_layer=3)
    result = Pipeline([RemoveBlocks(1), Validate(min_cosine=0.999)]).run(model, PassContext(dense=model,
                                                                                           calib=tokens(8)))
    assert [r["name"] for r in result.report["passes"][0]["report"]["depth"]["removed"]] == ["/layers.3"]
    assert len(result.model.graph.node) == len(model.graph.node) - 29
    with pytest.raises(Exception, match="positive integer"):
        create_pass("RemoveBlocks", {"depth": 0})
