"""Depth through ORT's fused residual normalizations (graph/fused_residual.py): SkipLayerNormalization
(the ORT-optimized BERT fixture) and SkipSimplifiedLayerNormalization (the GenAI-builder Llama folder).

The oracle as in test_depth.py: removing a layer gives the model whose two residual branches are zero,
i.e. the dense model with the layer's attention output projection and FFN down projection (weights and
biases) set to zero; the fused nodes of the other layers stay fused.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from test_depth import outputs, params_of, zeroed
from onnxprune.api import prune
from onnxprune.apply.remove_blocks import remove_blocks
from onnxprune.check.validate import check_valid
from onnxprune.graph.fused_residual import refuse, unfuse
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import units

BERT = FIXTURES / "transformers" / "bert_tiny_ort.onnx"
BERT_SHAPES = {n: (1, 16) for n in ("input_ids", "attention_mask", "token_type_ids")}


def bert_feed(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(0, 100, (1, 16)).astype(np.int64),
            "attention_mask": np.ones((1, 16), np.int64), "token_type_ids": np.zeros((1, 16), np.int64)}


def branch_ends(model: onnx.ModelProto, layer: int) -> set[str]:
    """The attention output and FFN output projections of a BERT layer: MatMul weights and the biases the
    fused SkipLayerNormalization adds."""
    names = set()
    for part in ("attention/output", "output"):
        matmul = next(n for n in model.graph.node if n.name == f"/bert/encoder/layer.{layer}/{part}/dense/MatMul")
        names.add(matmul.input[1])
        names.add(f"bert.encoder.layer.{layer}.{part.replace('/', '.')}.dense.bias")
    return names


def test_unfuse_then_refuse_gives_the_model_back():
    model = onnx.load(str(BERT))
    split, fused = unfuse(model)
    assert len(fused) == 4 and not any(n.op_type == "SkipLayerNormalization" for n in split.graph.node)
    feed = bert_feed()
    assert np.abs(outputs(split, feed)[0] - outputs(model, feed)[0]).max() < 1e-5
    back = refuse(split, fused)
    assert [(n.op_type, list(n.input), list(n.output)) for n in back.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


@pytest.mark.parametrize("layer", [0, 1])
def test_removing_a_fused_bert_layer_equals_zeroing_its_projections(layer):
    model = onnx.load(str(BERT))
    split, fused = unfuse(model)
    g = ModelGraph(split, BERT_SHAPES)
    kind, layers = units(g)
    assert kind == "layer" and len(layers) == 2
    small = refuse(remove_blocks(g, layers[layer].blocks), fused)
    check_valid(small, model)
    feed = bert_feed(layer)
    oracle = zeroed(model, branch_ends(model, layer))
    assert np.abs(outputs(small, feed)[0] - outputs(oracle, feed)[0]).max() < 1e-4
    assert np.abs(outputs(small, feed)[0] - outputs(model, feed)[0]).max() > 1e-2
    ops = [n.op_type for n in small.graph.node]
    assert ops.count("SkipLayerNormalization") == 2 and ops.count("Attention") == 1  # the other layer stays fused
    gone = set(params_of(model)) - set(params_of(small))
    assert branch_ends(model, layer) <= gone and not branch_ends(model, 1 - layer) & gone


def test_prune_depth_on_the_fused_bert():
    model = onnx.load(str(BERT))
    result = prune(model, depth=1, input_shapes=BERT_SHAPES, bench_rounds=0)
    depth = result.report["depth"]
    assert depth["unit"] == "layer" and depth["candidates"] == 2 and len(depth["removed"]) == 1
    layer = int(depth["removed"][0]["name"].rsplit(".", 1)[1])
    feed = bert_feed(3)
    oracle = zeroed(model, branch_ends(model, layer))
    assert np.abs(outputs(result.model, feed)[0] - outputs(oracle, feed)[0]).max() < 1e-4
    assert depth["macs_kept"] < 0.75


def test_unnamed_fused_nodes_split_and_fuse_back():
    model = onnx.load(str(BERT))
    for node in model.graph.node:
        if node.op_type == "SkipLayerNormalization":
            node.name = ""
    split, fused = unfuse(model)
    g = ModelGraph(split, BERT_SHAPES)
    _, layers = units(g)
    small = refuse(remove_blocks(g, layers[1].blocks), fused)
    check_valid(small, model)
    feed = bert_feed(5)
    named = onnx.load(str(BERT))
    assert np.abs(outputs(small, feed)[0] - outputs(zeroed(named, branch_ends(named, 1)), feed)[0]).max() < 1e-4
    skips = [n for n in small.graph.node if n.op_type == "SkipLayerNormalization"]
    assert len(skips) == 2 and all(len(n.input) == 5 and n.input[4].endswith("dense.bias") for n in skips)
