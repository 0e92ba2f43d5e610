"""ONNX Runtime's fused com.microsoft ops on tiny hand-built graphs and on a BERT after ORT's optimizer.

Each test checks the coupling (whole heads; a KV head with its query heads), the exact pruned shapes
and attributes, and the zero-channel oracle (the pruned model, valid in ONNX Runtime, matches the
dense model with the removed channels zeroed).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, oracle_gap, random_plan
from onnxprune.apply.rewrite import apply_plan
from onnxprune.couple.dependency import Dependency, Group, build_dependency
from onnxprune.couple.ops import Slot
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import session

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT
MS = "com.microsoft"
S, D, N, H, KV = 8, 32, 4, 8, 2  # tokens, width, query heads, head size, KV heads


def w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(nodes, inits: dict[str, np.ndarray], out_width: int = D) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", F, [1, S, D])],
                              [helper.make_tensor_value_info("y", F, [1, S, out_width])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                             ir_version=8)


def ms(op: str, inputs, outputs, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs, domain=MS, **attrs)


def matmul(x: str, weight: str, y: str) -> onnx.NodeProto:
    return helper.make_node("MatMul", [x, weight], [y])


def analyse(model: onnx.ModelProto) -> Dependency:
    return build_dependency(ModelGraph(model))


def group_of(dep: Dependency, slot: Slot) -> Group:
    return dep.groups[dep.channel_group[dep.elements(slot)[0]]]


def node_attr(model: onnx.ModelProto, op: str, name: str):
    node = next(n for n in model.graph.node if n.op_type == op)
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def dims(model: onnx.ModelProto, name: str) -> list[int]:
    return list(next(t.dims for t in model.graph.initializer if t.name == name))


def prune_exact(model: onnx.ModelProto, dep: Dependency, seeds=(0, 1, 2)) -> onnx.ModelProto:
    """Random plans (half of every group) are exact; the last pruned model is returned."""
    pruned = None
    for seed in seeds:
        plan = random_plan(dep, 0.5, seed)
        assert plan.removed.any(), "nothing was removed"
        assert oracle_gap(model, plan) < 1e-5
        pruned = apply_plan(plan)
    session(pruned)
    return pruned


def heads_of(dep: Dependency, slot: Slot, count: int, start: int = 0, size: int = H) -> np.ndarray:
    """The channel of each head along `slot` (asserting a head is one channel)."""
    blocks = dep.elements(slot)[start:start + count * size].reshape(count, size)
    assert (blocks == blocks[:, :1]).all(), f"a head of {slot} is split across channels"
    return blocks[:, 0]


# ---- attention ---------------------------------------------------------------------------------------------

def attention_model() -> onnx.ModelProto:
    """x -> Attention (packed QKV weights) -> MatMul."""
    nodes = [ms("Attention", ["x", "Wqkv", "bqkv"], ["a"], num_heads=N), matmul("a", "Wo", "y")]
    return make(nodes, {"Wqkv": w(D, 3 * N * H), "bqkv": w(3 * N * H), "Wo": w(N * H, D)})


def test_attention_prunes_whole_heads():
    model = attention_model()
    dep = analyse(model)
    heads = heads_of(dep, Slot("a", 2), N)
    for start in (0, N * H, 2 * N * H):  # the q, k and v sections of the packed weights and bias
        assert (heads_of(dep, Slot("Wqkv", 1), N, start) == heads).all()
        assert (heads_of(dep, Slot("bqkv", 0), N, start) == heads).all()
    assert group_of(dep, Slot("a", 2)).prunable == N
    pruned = prune_exact(model, dep)
    assert node_attr(pruned, "Attention", "num_heads") == N // 2
    assert dims(pruned, "Wqkv") == [D, 3 * (N // 2) * H] and dims(pruned, "Wo") == [(N // 2) * H, D]


def test_attention_qkv_hidden_sizes_follow():
    nodes = [ms("Attention", ["x", "Wqkv", "bqkv"], ["a"], num_heads=N, qkv_hidden_sizes=[N * H, N * H, N * 4]),
             matmul("a", "Wo", "y")]
    model = make(nodes, {"Wqkv": w(D, 2 * N * H + N * 4), "bqkv": w(2 * N * H + N * 4), "Wo": w(N * 4, D)})
    pruned = prune_exact(model, analyse(model))
    assert node_attr(pruned, "Attention", "qkv_hidden_sizes") == [2 * H, 2 * H, 2 * 4]


def test_unknown_attribute_is_a_barrier_with_its_reason():
    """An attribute from a later ONNX Runtime (which today's would refuse to load, so it is added
    after the shapes are known) freezes the heads, and says why."""
    g = ModelGraph(attention_model())
    g.nodes[0].attrs["future_knob"] = 1
    dep = build_dependency(g)
    grp = group_of(dep, Slot("a", 2))
    assert grp.prunable == 0
    assert any("attribute 'future_knob' is not understood" in str(f) for f in grp.freezes)


@pytest.mark.parametrize("attr,value", [("qk_norm_epsilon", 1e-6), ("causal", 1)])
def test_attribute_ort_knows_but_the_rule_does_not_is_named_by_inspect(tmp_path, capsys, attr, value):
    """GroupQueryAttention attributes of newer ONNX Runtimes (qk_norm_epsilon: Qwen3's per-head Q/K norm
    fused in) load and run, but the rule was not written for them: `inspect` names the attribute as the
    barrier, and `prune` keeps every head (the input file untouched)."""
    from onnxprune.cli.main import main

    model = gqa_model(False, False)
    next(n for n in model.graph.node if n.op_type == "GroupQueryAttention").attribute.append(
        helper.make_attribute(attr, value))
    path, out = tmp_path / "gqa.onnx", tmp_path / "small.onnx"
    onnx.save(model, str(path))
    before = path.read_bytes()
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"GroupQueryAttention 'a': attribute '{attr}' is not understood by the pruning rule" in text
    assert main(["prune", str(path), "-o", str(out), "--ratio", "0.5", "--bench-rounds", "0", "-q"]) == 0
    pruned = onnx.load(str(out))
    assert node_attr(pruned, "GroupQueryAttention", "num_heads") == N
    assert node_attr(pruned, "GroupQueryAttention", "kv_num_heads") == KV
    assert dims(pruned, "Wq") == [D, N * H] and path.read_bytes() == before


def mha_model(bnsh: bool = False) -> onnx.ModelProto:
    """Separate q/k/v projections into MultiHeadAttention; key and value optionally per head [B,N,S,H]."""
    nodes = [matmul("x", "Wq", "q"), matmul("x", "Wk", "k"), matmul("x", "Wv", "v")]
    inits = {"Wq": w(D, N * H), "Wk": w(D, N * H), "Wv": w(D, N * H), "Wo": w(N * H, D)}
    if bnsh:
        for t in ("k", "v"):
            nodes += [helper.make_node("Reshape", [t, "split"], [t + "r"]),
                      helper.make_node("Transpose", [t + "r"], [t + "4"], perm=[0, 2, 1, 3])]
        inits["split"] = np.array([1, S, N, H], np.int64)
        nodes.append(ms("MultiHeadAttention", ["q", "k4", "v4"], ["a"], num_heads=N))
    else:
        inits["bqkv"] = w(3 * N * H)
        nodes.append(ms("MultiHeadAttention", ["q", "k", "v", "bqkv"], ["a"], num_heads=N))
    nodes.append(matmul("a", "Wo", "y"))
    return make(nodes, inits)


@pytest.mark.parametrize("bnsh", [False, True])
def test_multihead_attention_prunes_whole_heads(bnsh):
    model = mha_model(bnsh)
    dep = analyse(model)
    heads = heads_of(dep, Slot("a", 2), N)
    for t in ("Wq", "Wk", "Wv"):
        assert (heads_of(dep, Slot(t, 1), N) == heads).all()
    if bnsh:
        assert (dep.elements(Slot("k4", 1)) == heads).all()  # the per-head axis is the same channels
    pruned = prune_exact(model, dep)
    assert node_attr(pruned, "MultiHeadAttention", "num_heads") == N // 2
    assert dims(pruned, "Wq") == [D, (N // 2) * H]


# ---- grouped-query attention -----------------------------------------------------------------------------

def gqa_model(packed: bool = False, rotary: bool = False) -> onnx.ModelProto:
    """Grouped-query attention, N query heads over KV heads, then the output projection (ONNX Runtime
    rotates heads whose size is a multiple of 16 only)."""
    H = 16 if rotary else globals()["H"]
    inits = {"seqlens": np.array([S - 1], np.int32), "total": np.array(S, np.int32), "Wo": w(N * H, D)}
    if packed:
        nodes = [matmul("x", "Wqkv", "qkv")]
        inits["Wqkv"] = w(D, (N + 2 * KV) * H)
        qkv = ["qkv", "", ""]
    else:
        nodes = [matmul("x", "Wq", "q"), matmul("x", "Wk", "k"), matmul("x", "Wv", "v")]
        inits.update(Wq=w(D, N * H), Wk=w(D, KV * H), Wv=w(D, KV * H))
        qkv = ["q", "k", "v"]
    extra, attrs = [], {}
    if rotary:
        angles = np.arange(S)[:, None] / 10000 ** (np.arange(H // 2) / (H // 2))
        inits.update(cos=np.cos(angles).astype(np.float32), sin=np.sin(angles).astype(np.float32))
        extra, attrs = ["cos", "sin"], {"do_rotary": 1}
    nodes += [ms("GroupQueryAttention", qkv + ["", "", "seqlens", "total"] + extra, ["a", "pk", "pv"],
                 num_heads=N, kv_num_heads=KV, **attrs), matmul("a", "Wo", "y")]
    return make(nodes, inits)


@pytest.mark.parametrize("packed,rotary", [(False, False), (True, False), (False, True)])
def test_gqa_kv_head_goes_with_its_query_heads(packed, rotary):
    model = gqa_model(packed, rotary)
    dep = analyse(model)
    group, h = N // KV, 16 if rotary else H
    queries = heads_of(dep, Slot("a", 2), N, size=h)
    assert len(set(queries)) == KV and (queries == np.repeat(queries[::group], group)).all()
    if packed:
        q, k, v = (heads_of(dep, Slot("Wqkv", 1), c, s) for c, s in ((N, 0), (KV, N * H), (KV, (N + KV) * H)))
    else:
        q, k, v = (heads_of(dep, Slot(t, 1), c, size=h) for t, c in (("Wq", N), ("Wk", KV), ("Wv", KV)))
    assert (q == queries).all() and (k == queries[::group]).all() and (v == k).all()
    pruned = prune_exact(model, dep)
    assert node_attr(pruned, "GroupQueryAttention", "num_heads") == N // 2
    assert node_attr(pruned, "GroupQueryAttention", "kv_num_heads") == KV // 2
    if packed:
        assert dims(pruned, "Wqkv") == [D, (N + 2 * KV) // 2 * H]
    else:
        assert dims(pruned, "Wq") == [D, N // 2 * h] and dims(pruned, "Wk") == [D, KV // 2 * h]


def test_rotary_embedding_passes_whole_heads():
    pos = np.arange(S, dtype=np.int64)[None]
    angles = np.arange(S)[:, None] / 10000 ** (np.arange(H // 2) / (H // 2))
    nodes = [matmul("x", "Wq", "q"), matmul("x", "Wk", "k"), matmul("x", "Wv", "v"),
             ms("RotaryEmbedding", ["q", "pos", "cos", "sin"], ["qr"], num_heads=N),
             ms("RotaryEmbedding", ["k", "pos", "cos", "sin"], ["kr"]),
             ms("MultiHeadAttention", ["qr", "kr", "v"], ["a"], num_heads=N), matmul("a", "Wo", "y")]
    inits = {"Wq": w(D, N * H), "Wk": w(D, N * H), "Wv": w(D, N * H), "Wo": w(N * H, D), "pos": pos,
             "cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}
    model = make(nodes, inits)
    dep = analyse(model)
    assert (heads_of(dep, Slot("q", 2), N) == heads_of(dep, Slot("a", 2), N)).all()
    pruned = prune_exact(model, dep)
    assert node_attr(pruned, "RotaryEmbedding", "num_heads") == N // 2


# ---- normalizations and activations -------------------------------------------------------------------------

FFN = 48


@pytest.mark.parametrize("norm,act", [("SkipLayerNormalization", "BiasGelu"),
                                      ("SkipSimplifiedLayerNormalization", "FastGelu"),
                                      ("SimplifiedLayerNormalization", "Gelu")])
def test_ffn_between_fused_norms_prunes_and_hidden_width_is_frozen(norm, act):
    """MatMul -> fused activation -> MatMul -> fused norm -> MatMul: the FFN neurons prune; the hidden
    width, which the norm normalizes over, is frozen with that reason."""
    act_inputs = ["h", "b1"] if act != "Gelu" else ["hb"]
    nodes = [matmul("x", "W1", "h"), ms(act, act_inputs, ["g"]), matmul("g", "W2", "f")]
    if act == "Gelu":
        nodes.insert(1, helper.make_node("Add", ["h", "b1"], ["hb"]))
    if norm == "SkipLayerNormalization":
        nodes.append(ms(norm, ["f", "x", "gamma", "beta", "b2"], ["n", "", "", "sum"]))
    elif norm == "SkipSimplifiedLayerNormalization":
        nodes.append(ms(norm, ["f", "x", "gamma", "b2"], ["n", "", "", "sum"]))
    else:
        nodes.append(helper.make_node(norm, ["f", "gamma"], ["n"], axis=-1))  # ORT registers it in ""
    nodes.append(matmul("n", "W3", "y"))
    inits = {"W1": w(D, FFN), "b1": w(FFN), "W2": w(FFN, D), "gamma": w(D) + 1, "beta": w(D), "b2": w(D),
             "W3": w(D, D)}
    model = make(nodes, {k: v for k, v in inits.items() if any(k in n.input for n in nodes)})
    dep = analyse(model)
    assert group_of(dep, Slot("W1", 1)).prunable == FFN
    hidden = group_of(dep, Slot("W3", 0))
    assert hidden.prunable == 0
    assert any("normalizes over the hidden (residual-stream) width" in str(f) for f in hidden.freezes)
    pruned = prune_exact(model, dep)
    assert dims(pruned, "W1") == [D, FFN // 2] and dims(pruned, "b1") == [FFN // 2]


# ---- 4-bit weights ---------------------------------------------------------------------------------------------

def nbits_model(flat_scales: bool = False) -> onnx.ModelProto:
    """MatMulNBits (4 bit, blocks of 16) -> Relu -> MatMulNBits: the hidden rows of the first layer are
    the input blocks of the second."""
    hidden, block = 64, 16

    def layer(x, y, k, n, name):
        blocks = k // block
        scales = w(n, blocks) + 1
        inits = {name: RNG.integers(0, 256, (n, blocks, block // 2)).astype(np.uint8),
                 name + "_s": scales.reshape(-1) if flat_scales and name == "B2" else scales}
        return ms("MatMulNBits", [x, name, name + "_s"], [y], K=k, N=n, bits=4, block_size=block), inits

    n1, i1 = layer("x", "h", D, hidden, "B1")
    n2, i2 = layer("r", "y", hidden, D, "B2")
    return make([n1, helper.make_node("Relu", ["h"], ["r"]), n2], {**i1, **i2})


def test_matmul_nbits_prunes_rows_and_whole_blocks():
    model = nbits_model()
    dep = analyse(model)
    rows = dep.elements(Slot("B1", 0)).reshape(4, 16)
    assert (rows == rows[:, :1]).all()  # one channel per block of 16 rows
    assert (dep.elements(Slot("B2", 1)) == rows[:, 0]).all()
    pruned = prune_exact(model, dep)
    assert dims(pruned, "B1") == [32, 2, 8] and dims(pruned, "B2") == [D, 2, 8]
    assert dims(pruned, "B1_s") == [32, 2] and dims(pruned, "B2_s") == [D, 2]
    assert node_attr(pruned, "MatMulNBits", "N") == 32
    assert [helper.get_attribute_value(a) for n in pruned.graph.node if n.op_type == "MatMulNBits"
            for a in n.attribute if a.name == "K"] == [D, 32]


def test_matmul_nbits_flat_scales_are_a_barrier():
    dep = analyse(nbits_model(flat_scales=True))
    grp = group_of(dep, Slot("B1", 0))
    assert grp.prunable == 0
    assert any("flat scales" in str(f) for f in grp.freezes)


# ---- a BERT after ONNX Runtime's transformer optimizer --------------------------------------------------------

BERT = FIXTURES / "transformers" / "bert_tiny_ort.onnx"
BERT_SHAPES = {name: (1, 16) for name in ("input_ids", "attention_mask", "token_type_ids")}


def test_ort_optimized_bert_prunes_heads_and_ffn():
    model = onnx.load(str(BERT))
    ops = {n.op_type for n in model.graph.node if n.domain == MS}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"} <= ops
    dep = build_dependency(ModelGraph(model, BERT_SHAPES))
    prunable = sorted(g.prunable for g in dep.groups if g.prunable)
    assert prunable == [4, 4, 64, 64]  # the heads and the FFN neurons of both layers
    for seed in (0, 1):
        assert oracle_gap(model, random_plan(dep, 0.5, seed)) < 1e-5
    pruned = apply_plan(random_plan(dep, 0.5, 0))
    assert [helper.get_attribute_value(a) for n in pruned.graph.node if n.op_type == "Attention"
            for a in n.attribute if a.name == "num_heads"] == [2, 2]


def test_oracle_catches_the_wrong_head():
    """The oracle is not vacuous on fused heads: removing a different head than the one zeroed shows."""
    from onnxprune.check.oracle import zero_removed
    from onnxprune.couple.plan import Plan
    from onnxprune.load.data import synthetic_dataset
    from onnxprune.load.runtime import run_dataset
    model = attention_model()
    dep = analyse(model)
    heads = heads_of(dep, Slot("a", 2), N)
    zeroed, wrong = np.zeros(dep.num_channels, bool), np.zeros(dep.num_channels, bool)
    zeroed[heads[0]], wrong[heads[1]] = True, True
    dense = session(zero_removed(dep, zeroed))
    data = synthetic_dataset(dense, dep.graph.input_shapes, 2)
    a = run_dataset(dense, data)[0]
    b = run_dataset(session(apply_plan(Plan(dep, wrong, {}))), data)[0]
    assert np.abs(a - b).max() > 1e-3


# ---- a Llama as ONNX Runtime GenAI's builder writes it -------------------------------------------------------

GENAI = FIXTURES / "transformers" / "genai_llama.onnx"
GENAI_SHAPES = {"input_ids": (1, 16), "attention_mask": (1, 17),  # one cached token, then 16 new ones
                **{f"past_key_values.{k}.{t}": (1, 2, 1, 16) for k in (0, 1) for t in ("key", "value")}}


def test_genai_llama_prunes_ffn_and_keeps_the_kv_cache_interface():
    """Packed-QKV GroupQueryAttention with rotary and a KV cache, SkipSimplifiedLayerNormalization and
    SimplifiedLayerNormalization in the default domain: the model loads, the FFN neurons prune exactly,
    the heads (one KV group per KV head) are frozen by the cache in the interface, not by a missing rule."""
    model = onnx.load(str(GENAI))
    dep = build_dependency(ModelGraph(model, GENAI_SHAPES))
    prunable = [g for g in dep.groups if g.prunable]
    assert sorted(g.prunable for g in prunable) == [64, 64]
    qkv = next(n.input[1] for n in model.graph.node if n.op_type == "MatMul" and "qkv_proj" in n.name)
    heads = group_of(dep, Slot(qkv, 1))
    assert heads.size == KV and heads.prunable == 0
    assert all("graph" in f.op for f in heads.freezes)
    for seed in (0, 1):
        assert oracle_gap(model, random_plan(dep, 0.5, seed), samples=1) < 1e-5


def test_qdq_weights_around_fused_attention():
    """Per-channel int8 weights dequantized into Attention and the output projection: heads still go
    whole, the int8 weights and their scales are sliced alike (a QDQ model stays QDQ)."""
    cols = 3 * N * H
    wq = RNG.integers(-127, 128, (D, cols)).astype(np.int8)
    wo = RNG.integers(-127, 128, (N * H, D)).astype(np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["Wq8", "sq", "zq"], ["Wqkv"], axis=1),
             ms("Attention", ["x", "Wqkv", "bqkv"], ["a"], num_heads=N),
             helper.make_node("DequantizeLinear", ["Wo8", "so"], ["Wo"]), matmul("a", "Wo", "y")]
    inits = {"Wq8": wq, "sq": (RNG.uniform(0.5, 1.5, cols) * 0.01).astype(np.float32),
             "zq": np.zeros(cols, np.int8), "bqkv": w(cols), "Wo8": wo, "so": np.array(0.01, np.float32)}
    model = make(nodes, inits)
    dep = analyse(model)
    assert (heads_of(dep, Slot("Wq8", 1), N) == heads_of(dep, Slot("a", 2), N)).all()
    pruned = prune_exact(model, dep)
    assert dims(pruned, "Wq8") == [D, cols // 2] and dims(pruned, "sq") == [cols // 2]
    assert dims(pruned, "Wo8") == [N // 2 * H, D]
    assert node_attr(pruned, "Attention", "num_heads") == N // 2
