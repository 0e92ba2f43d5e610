"""Grouped-query attention as PyTorch exports it (fixtures/transformers/make_llama_gqa.py: a 2-layer Llama, 4 query
heads over 2 KV heads of 8, both exporters; `--qwen2` the same shape as a Qwen2, whose q/k/v biases go with
their heads).

A KV head and the query heads that read it (repeat_kv's Unsqueeze->Expand->Reshape) are one channel;
removing it rewrites the repeat-KV chain and every computed shape (TorchScript's Shape->Gather->
Concat, dynamo's constants), and the pruned model still runs at lengths other than the analysed one.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES, analyse, oracle_gap, random_plan
from onnxprune.apply.rewrite import apply_plan
from onnxprune.check.oracle import zero_removed
from onnxprune.check.validate import check_valid
from onnxprune.couple.dependency import Dependency
from onnxprune.couple.ops import Slot
from onnxprune.couple.plan import Plan
from onnxprune.load.runtime import session

HERE = FIXTURES / "transformers"
MODELS = ["llama_gqa.onnx", "llama_gqa_dynamo.onnx", "qwen2_gqa.onnx", "qwen2_gqa_dynamo.onnx"]
LAYERS, HEADS, KV, SIZE, HIDDEN = 2, 4, 2, 8, 32


def projections(model: onnx.ModelProto) -> list[dict[str, str]]:
    """Per layer, the weights of q, k, v, o, gate, up, down (the constant-weight MatMuls in order)."""
    inits = {t.name for t in model.graph.initializer}
    weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    names = ("q", "k", "v", "o", "gate", "up", "down")
    return [dict(zip(names, weights[7 * layer:7 * layer + 7])) for layer in range(LAYERS)]


def heads_of(dep: Dependency, slot: Slot, count: int) -> np.ndarray:
    blocks = dep.elements(slot).reshape(count, SIZE)
    assert (blocks == blocks[:, :1]).all(), f"a head of {slot} is split across channels"
    return blocks[:, 0]


def dims(model: onnx.ModelProto, name: str) -> list[int]:
    return list(next(t.dims for t in model.graph.initializer if t.name == name))


@pytest.mark.parametrize("name", MODELS)
def test_kv_head_and_its_query_heads_are_one_channel(name):
    model, dep = analyse(HERE / name)
    for w in projections(model):
        queries = heads_of(dep, Slot(w["q"], 1), HEADS)
        kv = heads_of(dep, Slot(w["k"], 1), KV)
        assert (queries == np.repeat(kv, HEADS // KV)).all()  # query heads 2k, 2k+1 read KV head k
        assert (heads_of(dep, Slot(w["v"], 1), KV) == kv).all()
        assert (heads_of(dep, Slot(w["o"], 0), HEADS) == queries).all()
        group = dep.groups[dep.channel_group[kv[0]]]
        assert group.size == KV and group.prunable == KV
        assert dep.groups[dep.channel_group[dep.elements(Slot(w["gate"], 1))[0]]].prunable == 64


def drop_first_kv_head(dep: Dependency, model: onnx.ModelProto) -> Plan:
    removed = np.zeros(dep.num_channels, dtype=bool)
    for w in projections(model):
        removed[dep.elements(Slot(w["k"], 1))[0]] = True
    return Plan(dep, removed, {})


@pytest.mark.parametrize("name", MODELS)
def test_removing_a_kv_group_is_exact_and_rewrites_shapes(name):
    model, dep = analyse(HERE / name)
    plan = drop_first_kv_head(dep, model)
    assert oracle_gap(model, plan) < 1e-5
    pruned = apply_plan(plan)
    check_valid(pruned, model)
    for w in projections(model):  # one KV head of 8 and its two query heads gone
        assert dims(pruned, w["q"]) == [HIDDEN, 2 * SIZE] and dims(pruned, w["o"]) == [2 * SIZE, HIDDEN]
        assert dims(pruned, w["k"]) == [HIDDEN, SIZE] and dims(pruned, w["v"]) == [HIDDEN, SIZE]
    biases = {t.name.split(".")[-2]: list(t.dims) for t in pruned.graph.initializer if t.name.endswith("proj.bias")}
    if name.startswith("qwen2"):  # Qwen2's q/k/v biases lose the removed heads' entries
        assert biases == {"q_proj": [2 * SIZE], "k_proj": [SIZE], "v_proj": [SIZE]}
    # computed shapes follow the input: other batch sizes and lengths than the analysed (1, 256)
    zeroed, small = session(zero_removed(dep, plan.removed)), session(pruned)
    rng = np.random.default_rng(0)
    for batch, length in ((2, 7), (1, 1), (3, 33)):
        ids = rng.integers(0, 128, (batch, length)).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        a, b = zeroed.run(None, feed)[0], small.run(None, feed)[0]
        assert a.shape == b.shape == (batch, length, 128)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()



@pytest.mark.parametrize("name", MODELS)
def test_random_plans_are_exact(name):
    model, dep = analyse(HERE / name)
    for seed in (0, 1):
        assert oracle_gap(model, random_plan(dep, 0.5, seed)) < 1e-5
