#!/usr/bin/env python3
"""Transformers as deployed: what prunes, the cost after pruning, and the zero-channel oracle.

Models (each skipped with a note when it cannot be made here):

- bert_tiny_ort, llama_gqa, llama_gqa_dynamo, genai_llama: the committed fixtures in fixtures/transformers/;
- minilm_ort: all-MiniLM-L6-v2 (TorchScript export made by tools/survey_exports.py minilm_ts) after
  ONNX Runtime's transformer optimizer (model_type bert, 12 heads, hidden 384): com.microsoft
  Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization;
- llama_gqa_256 / llama_gqa_256_dynamo: the random Llama of FACTS.md (hidden 256, 4 layers, 8 query
  heads over 2 KV heads, intermediate 688, vocabulary 2000), made by
  fixtures/transformers/make_llama_gqa.py (needs torch, transformers, onnxscript);
- swin_t / swin_t_dynamo: random-init Swin-T (transformers' Swin, `SwinConfig()` defaults), made by
  tools/make_swin.py (needs torch, transformers, onnxscript).

For each: the prunable groups (attention-head groups and others), `onnxprune.prune(ratio=0.5)` with
the l2 criterion (params, MACs, head counts before and after, validity in ONNX Runtime, fidelity on
synthetic inputs), and the oracle: the worst relative gap between the pruned model and the dense
model with the removed channels zeroed, over 3 random plans removing half of every group.

    python tools/bench_transformers.py [NAME ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.apply.rewrite import apply_plan  # noqa: E402
from onnxprune.check.oracle import zero_removed  # noqa: E402
from onnxprune.check.validate import check_valid  # noqa: E402
from onnxprune.couple.plan import Plan  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import run_dataset, session  # noqa: E402

FIXTURES = ROOT / "fixtures" / "transformers"
CACHE = Path.home() / ".cache" / "onnxprune" / "transformers"
SURVEY = Path.home() / ".cache" / "onnxprune" / "survey" / "minilm" / "minilm_ts.onnx"
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
HEAD_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention")


def _minilm_ort() -> Path:
    out = CACHE / "minilm_ort.onnx"
    if not out.exists():
        if not SURVEY.exists():
            subprocess.run([sys.executable, str(ROOT / "tools" / "survey_exports.py"), "--fetch-only", "minilm_ts"],
                           check=True)
        from onnxruntime.transformers import optimizer
        CACHE.mkdir(parents=True, exist_ok=True)
        optimizer.optimize_model(str(SURVEY), model_type="bert", num_heads=12, hidden_size=384,
                                 opt_level=1).save_model_to_file(str(out))
    return out


def _llama_256(dynamo: bool) -> Path:
    out = CACHE / f"llama_gqa_256{'_dynamo' if dynamo else ''}.onnx"
    if not out.exists():
        subprocess.run([sys.executable, str(FIXTURES / "make_llama_gqa.py"), "--out", str(CACHE), "--name",
                        "llama_gqa_256", "--hidden", "256", "--layers", "4", "--heads", "8", "--kv-heads", "2",
                        "--intermediate", "688", "--vocab", "2000"], check=True)
    return out


def _swin_t(dynamo: bool) -> Path:
    out = CACHE / f"swin_t{'_dynamo' if dynamo else ''}.onnx"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_swin.py"), "--out", str(CACHE), "--only",
                        "dynamo" if dynamo else "ts"], check=True)
    return out


MODELS = {  # name -> (path maker, input shapes)
    "bert_tiny_ort": (lambda: FIXTURES / "bert_tiny_ort.onnx", {n: (1, 16) for n in BERT_INPUTS}),
    "llama_gqa": (lambda: FIXTURES / "llama_gqa.onnx", {"input_ids": (1, 16), "attention_mask": (1, 16)}),
    "llama_gqa_dynamo": (lambda: FIXTURES / "llama_gqa_dynamo.onnx", {"input_ids": (1, 16), "attention_mask": (1, 16)}),
    "genai_llama": (lambda: FIXTURES / "genai_llama.onnx",
                    {"input_ids": (1, 16), "attention_mask": (1, 17),
                     **{f"past_key_values.{k}.{t}": (1, 2, 1, 16) for k in (0, 1) for t in ("key", "value")}}),
    "minilm_ort": (_minilm_ort, {n: (1, 128) for n in BERT_INPUTS}),
    "llama_gqa_256": (lambda: _llama_256(False), {"input_ids": (1, 64), "attention_mask": (1, 64)}),
    "llama_gqa_256_dynamo": (lambda: _llama_256(True), {"input_ids": (1, 64), "attention_mask": (1, 64)}),
    "swin_t": (lambda: _swin_t(False), {"image": (1, 3, 224, 224)}),
    "swin_t_dynamo": (lambda: _swin_t(True), {"image": (1, 3, 224, 224)}),
}


def random_plan(dep, seed: int) -> Plan:
    rng = np.random.default_rng(seed)
    removed = np.zeros(dep.num_channels, dtype=bool)
    for grp in dep.groups:
        candidates = grp.channels[~grp.frozen]
        drop = min(len(candidates) // 2, grp.size - 1)
        if drop > 0:
            removed[rng.choice(candidates, size=drop, replace=False)] = True
    return Plan(dep, removed, {})


def oracle_gap(model: onnx.ModelProto, dep, seeds=(0, 1, 2)) -> float:
    worst = 0.0
    for seed in seeds:
        plan = random_plan(dep, seed)
        pruned = apply_plan(plan)
        check_valid(pruned, model)
        zeroed, small = session(zero_removed(dep, plan.removed)), session(pruned)
        data = synthetic_dataset(zeroed, dep.graph.input_shapes, 1, seed=seed)  # GQA with a cache: batch 1
        for a, b in zip(run_dataset(zeroed, data), run_dataset(small, data)):
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(a).max(), 1e-6)))
    return worst


def heads(model: onnx.ModelProto) -> str:
    counts = []
    for node in model.graph.node:
        if node.op_type in HEAD_OPS:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            counts.append(f"{attrs['num_heads']}" + (f"/{attrs['kv_num_heads']}" if "kv_num_heads" in attrs else ""))
    return ",".join(counts) if counts else "-"


def measure(name: str) -> str:
    make, shapes = MODELS[name]
    try:
        path = make()
    except Exception as exc:  # a maker needs torch/transformers or the network
        return f"| {name} | skipped: {type(exc).__name__}: {str(exc)[:80]} |"
    model = onnx.load(str(path))
    dep = analyse(model, shapes)
    prunable = [g for g in dep.groups if g.prunable]
    head_groups = sum(1 for g in prunable if g.size <= 16)  # heads or KV groups; FFNs are wider
    gap = oracle_gap(dep.graph.model, dep)
    result = prune(model, 0.5, input_shapes=shapes, bench_rounds=0, round_to=1)
    before, after = result.report["before"], result.report["after"]
    fidelity = result.report.get("fidelity", {})
    cosine = fidelity.get("cosine", fidelity.get("min_cosine", float("nan")))
    return (f"| {name} | {len(prunable)} ({head_groups} head) | {before['params'] / 1e6:.3f}M -> "
            f"{after['params'] / 1e6:.3f}M ({after['params'] / before['params']:.3f}) | "
            f"{after['macs'] / before['macs']:.3f} | {heads(model)} -> {heads(result.model)} | {gap:.1e} | "
            f"{cosine:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[[]] + list(MODELS), default=[])
    args = ap.parse_args(argv)
    print("| model | prunable groups | params at ratio 0.5 | MACs kept | heads (q/kv) | oracle gap | cosine |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names or list(MODELS):
        print(measure(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
