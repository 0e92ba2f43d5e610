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

`--goal` runs issue #12's goal list instead (one row per model, GOAL below): every model pruned to
`--target-macs 0.7` (`onnxprune prune MODEL -o OUT --target-macs 0.7 --round-to 1`, plus `--calib`
synthetic token ids where a row says so; a GenAI folder is pruned as a folder and then loaded and run
by ONNX Runtime GenAI), checked in ONNX Runtime, the oracle as above, and what went (attention heads
or GQA KV groups with their query heads, FFN neurons, hidden width). `--json FILE` merges the rows
into FILE by model name, so models can be run one process at a time on a loaded machine:

    python tools/bench_transformers.py --goal [NAME ...] [--json docs/bench_transformers_goal.json]
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
QWEN2_FOLDER = Path.home() / ".cache" / "onnxprune" / "folders" / "genai_qwen2"


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


def _qwen2_256(dynamo: bool) -> Path:
    """The Llama above as transformers' Qwen2 (q/k/v biases), same shape: make_llama_gqa.py --qwen2."""
    out = CACHE / f"qwen2_gqa_256{'_dynamo' if dynamo else ''}.onnx"
    if not out.exists():
        subprocess.run([sys.executable, str(FIXTURES / "make_llama_gqa.py"), "--qwen2", "--out", str(CACHE), "--name",
                        "qwen2_gqa_256", "--hidden", "256", "--layers", "4", "--heads", "8", "--kv-heads", "2",
                        "--intermediate", "688", "--vocab", "2000"], check=True)
    return out


def _minilm(member: str) -> Path:
    """all-MiniLM-L6-v2 exported by tools/survey_exports.py (minilm_ts, minilm_dynamo)."""
    out = SURVEY.parent / f"{member}.onnx"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "survey_exports.py"), "--fetch-only", member], check=True)
    return out


def _made(script: str, name: str, dynamo: bool) -> Path:
    """CACHE/NAME[_dynamo].onnx, exported by tools/SCRIPT the first time."""
    out = CACHE / f"{name}{'_dynamo' if dynamo else ''}.onnx"
    if not out.exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / script), "--out", str(CACHE), "--only",
                        "dynamo" if dynamo else "ts"], check=True)
    return out


def _vit(dynamo: bool) -> Path:
    return _made("make_vit.py", "vit_b_16", dynamo)


def _genai_folder(qwen2: bool) -> Path:
    """The GenAI-builder folders of tools/bench_model_folder.py (the Llama one is a committed fixture)."""
    out = QWEN2_FOLDER if qwen2 else FIXTURES / "genai_llama_folder"
    if not (out / "genai_config.json").exists():
        subprocess.run([sys.executable, str(FIXTURES / "make_genai_folder.py"), "--qwen2", "--out", str(out)],
                       check=True)
    return out


def _swin_t(dynamo: bool) -> Path:
    return _made("make_swin.py", "swin_t", dynamo)


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
    "minilm_ts": (lambda: _minilm("minilm_ts"), {n: (1, 128) for n in BERT_INPUTS}),
    "minilm_dynamo": (lambda: _minilm("minilm_dynamo"), {n: (1, 128) for n in BERT_INPUTS}),
    "qwen2_gqa_256": (lambda: _qwen2_256(False), {"input_ids": (1, 64), "attention_mask": (1, 64)}),
    "qwen2_gqa_256_dynamo": (lambda: _qwen2_256(True), {"input_ids": (1, 64), "attention_mask": (1, 64)}),
    "vit_b_16": (lambda: _vit(False), {"image": (1, 3, 224, 224)}),
    "vit_b_16_dynamo": (lambda: _vit(True), {"image": (1, 3, 224, 224)}),
}
_CACHED = {"input_ids": (1, 16), "attention_mask": (1, 17),  # a GenAI model with one cached position
           **{f"past_key_values.{k}.{t}": (1, 2, 1, 16) for k in (0, 1) for t in ("key", "value")}}
for _qwen2 in (False, True):
    MODELS[f"genai_{'qwen2' if _qwen2 else 'llama'}_folder"] = (lambda q=_qwen2: _genai_folder(q), _CACHED)


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
    model = onnx.load(str(path / "model.onnx" if path.is_dir() else path))  # a GenAI folder: its model, cache kept
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

# issue #12's goal list: name -> (model, exporter, query heads per pruned attention channel, --calib needed)
GOAL = {
    "minilm_ts": ("all-MiniLM-L6-v2", "TorchScript", 1, False),
    "minilm_dynamo": ("all-MiniLM-L6-v2", "dynamo", 1, False),
    "minilm_ort": ("all-MiniLM-L6-v2", "TorchScript + ORT optimizer (fused)", 1, False),
    "llama_gqa_256": ("Llama, 8 q / 2 KV heads", "TorchScript", 4, False),
    "llama_gqa_256_dynamo": ("Llama, 8 q / 2 KV heads", "dynamo", 4, False),
    "genai_llama_folder": ("Llama, 4 q / 2 KV heads", "GenAI builder folder", 2, False),
    "qwen2_gqa_256": ("Qwen2, 8 q / 2 KV heads", "TorchScript", 4, False),
    "qwen2_gqa_256_dynamo": ("Qwen2, 8 q / 2 KV heads", "dynamo", 4, False),
    "genai_qwen2_folder": ("Qwen2, 4 q / 2 KV heads", "GenAI builder folder", 2, False),
    "vit_b_16": ("ViT-B/16", "TorchScript", 1, False),
    "vit_b_16_dynamo": ("ViT-B/16", "dynamo", 1, False),
    "swin_t": ("Swin-T", "TorchScript", 1, False),
    "swin_t_dynamo": ("Swin-T", "dynamo", 1, False),
}
TARGET_MACS = 0.7


def token_calib(model: onnx.ModelProto, shapes: dict, samples: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic calibration feeds: token ids uniform over the vocabulary (the first Gather table's rows),
    full attention masks, zero token types."""
    tables = {t.name: t.dims[0] for t in model.graph.initializer if len(t.dims) == 2}
    vocab = next((tables[n.input[0]] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables), 2)
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in shapes.items():
        if name == "input_ids":
            feeds[name] = rng.integers(0, vocab, (samples, *shape)).astype(np.int64)
        else:
            feeds[name] = (np.ones if name == "attention_mask" else np.zeros)((samples, *shape), np.int64)
    return feeds


def what_went(plan: Plan, share: int) -> str:
    """Attention channels (heads, or KV groups with their `share` query heads), FFN neurons, hidden width:
    before -> after over the prunable groups. A head channel spans several elements of a weight axis."""
    dep, removed = plan.dep, plan.removed
    counts = {"heads": [0, 0], "neurons": [0, 0]}
    stream = {h["group"] for h in plan.summary().get("hidden", [])}
    for grp in dep.groups:
        if not grp.prunable or grp.id in stream:
            continue
        sizes = [dep.slot_size(s) for s in grp.slots if s.tensor in dep.graph.constants]
        kind = "heads" if sizes and max(sizes) > grp.size else "neurons"
        counts[kind][0] += grp.size
        counts[kind][1] += int((~removed[grp.channels]).sum())
    (h0, h1), (n0, n1) = counts["heads"], counts["neurons"]
    parts = []
    if h1 < h0:
        parts.append(f"KV groups {h0} -> {h1} (query heads {h0 * share} -> {h1 * share})" if share > 1
                     else f"heads {h0} -> {h1}")
    if n1 < n0:
        parts.append(f"FFN neurons {n0} -> {n1}")
    parts += [f"hidden {h['before']} -> {h['after']}" for h in plan.summary().get("hidden", []) if h["after"] < h["before"]]
    return "; ".join(parts) or "nothing"


def _genai_runs(folder: Path, result) -> int:
    """Write the pruned folder, then load it in ONNX Runtime GenAI and greedily decode 8 tokens from 4 prompts."""
    import tempfile

    from bench_model_folder import generate  # tools/: ONNX Runtime GenAI's generation loop

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        onnx.save(result.model, str(out / folder.joinpath("model.onnx").name))
        for name, text in result.configs.items():
            (out / name).write_text(text)
        for other in result.folder.others:
            (out / other.name).write_bytes(other.read_bytes())
        prompts = np.random.default_rng(0).integers(3, 96, (4, 8))
        return sum(len(t) for t in generate(out, prompts))


def goal_row(name: str) -> dict:
    """Prune one goal model to 0.7 of the dense MACs; validity, oracle and what went."""
    from onnxprune.options import options_from_keywords
    from onnxprune.folder import prune_folder

    model_name, exporter, share, needs_calib = GOAL[name]
    make, shapes = MODELS[name]
    path = make()
    row = {"name": name, "model": model_name, "exporter": exporter, "run": f"--target-macs {TARGET_MACS} --round-to 1"}
    if path.is_dir():
        options, _ = options_from_keywords({"target_macs": TARGET_MACS, "round_to": 1, "bench_rounds": 0})
        result = prune_folder(path, options)
        dense, pruned = onnx.load(str(path / "model.onnx")), result.model
        row["valid"] = f"ok; GenAI decodes {_genai_runs(path, result)} tokens"
        row["run"] += " (folder in, folder out)"
    else:
        dense = onnx.load(str(path))
        calib = token_calib(dense, shapes) if needs_calib else None
        if needs_calib:
            row["run"] += " --calib (synthetic token ids)"
        result = prune(dense, target_macs=TARGET_MACS, calib=calib, input_shapes=shapes, bench_rounds=0, round_to=1)
        pruned = result.model
        check_valid(pruned, dense)
        outputs = run_dataset(session(pruned), synthetic_dataset(session(dense), shapes, 2))
        row["valid"] = "ok" if all(np.isfinite(o).all() for o in outputs) else "non-finite outputs"
    before, after = result.report["before"], result.report["after"]
    if path.is_dir():  # the oracle on what is pruned: the folder's model with its KV cache taken out
        from onnxprune.folder import _default_shapes
        from onnxprune.graph.kv_cache import strip
        from onnxprune.load.model_folder import open_folder

        dense = strip(dense, *(open_folder(path).cache_templates() or (None, None)))[0]
        shapes = _default_shapes(dense)
    dep = analyse(dense, shapes)
    row.update(params=round(after["params"] / before["params"], 3), macs=round(after["macs"] / before["macs"], 3),
               went=what_went(result.plan, share), oracle=float(f"{oracle_gap(dep.graph.model, dep):.1e}"))
    return row


def run_goal(names: list[str], json_path: Path | None) -> int:
    import json

    rows = json.loads(json_path.read_text()) if json_path and json_path.exists() else {}
    for name in names:
        if name not in GOAL:
            continue
        try:
            rows[name] = goal_row(name)
        except Exception as exc:  # a maker without torch, or a refusal: the row says which
            rows[name] = {"name": name, "model": GOAL[name][0], "exporter": GOAL[name][1],
                          "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
        print(json.dumps(rows[name]), flush=True)
        if json_path:
            json_path.write_text(json.dumps(rows, indent=1) + "\n")
    print("\n| model | exporter | params | MACs | valid in ONNX Runtime | oracle (3 random plans) | what went |")
    print("|---|---|---|---|---|---|---|")
    for name in GOAL:
        r = rows.get(name)
        if r is None:
            continue
        if "error" in r:
            print(f"| {r['model']} | {r['exporter']} | | | {r['error']} | | |")
            continue
        oracle = f"{r['oracle']:.1e}" if r["oracle"] else "0 (bit-exact)"
        print(f"| {r['model']} | {r['exporter']} | {r['params']:.3f} | {r['macs']:.3f} | {r['valid']} | {oracle} | "
              f"{r['went']} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[[]] + list(MODELS), default=[])
    ap.add_argument("--goal", action="store_true", help="issue #12's goal list at --target-macs 0.7 (one table)")
    ap.add_argument("--json", type=Path, help="with --goal: merge the rows into this file by model name")
    args = ap.parse_args(argv)
    if args.goal:
        return run_goal(args.names or list(GOAL), args.json)
    print("| model | prunable groups | params at ratio 0.5 | MACs kept | heads (q/kv) | oracle gap | cosine |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names or list(MODELS):
        print(measure(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
