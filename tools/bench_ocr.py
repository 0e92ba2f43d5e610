#!/usr/bin/env python3
"""Benchmark: PP-OCRv4 recognizer pruned by onnxprune, character error rate on text rendered with PIL.

The recognizer (zoo 'ppocr_rec', from the rapidocr-onnxruntime wheel; its character dictionary is the
model's `character` metadata entry, which rapidocr reads the same way) reads text lines that this
script draws with PIL in the fonts installed on the machine (DejaVu by default): dates, prices, codes,
Latin words in mixed case. PaddleOCR preprocessing: RGB, resize to height 48 keeping the aspect ratio,
(x/255 - 0.5)/0.5, zero-pad the width to 320. Greedy CTC decoding (argmax, collapse repeats, drop
blank, strip edge spaces). The character error rate (edit distance / reference length, summed over strings) is measured
for the dense model and for models pruned to each fraction of MACs kept with global scope, a
calibration-data criterion and label-free recovery, calibrated on other rendered strings.

    python tools/bench_ocr.py                      # reconstruction and activation, global, lstsq
    python tools/bench_ocr.py --configs reconstruction:lstsq --levels 0.4,0.3

Prints Markdown tables and exits 0. About 1 minute per pruned model on 2 cores (10 by default); the
'sensitivity' criterion takes about 6 minutes per model here.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import onnxprune  # noqa: E402
from benchlib import revision  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from tasks import cer, find_fonts, random_text, render, resize_norm  # noqa: E402  (shared with bench_tasks)

H, W = 48, 320
LEVELS = (0.9, 0.8, 0.7, 0.6, 0.5)


def preprocess(img) -> np.ndarray:
    """PaddleOCR's resize_norm_img for rec_img_shape [3, 48, 320] (RGB here; the images are gray)."""
    return resize_norm(img, H, W)


def make_set(n: int, seed: int, fonts: list[str], vocab: set[str], avoid=frozenset()) -> tuple[list[str], np.ndarray]:
    """`n` strings that the dictionary can spell and that fit the 320-pixel line without squeezing."""
    rng = random.Random(seed)
    texts, images = [], []
    while len(texts) < n:
        text = random_text(rng)
        if any(c not in vocab for c in text) or text in avoid:
            continue
        font = rng.choice(fonts) if fonts else None
        img = render(text, font, rng.randint(26, 36), rng)
        if H * img.size[0] / img.size[1] > W:
            continue
        texts.append(text)
        images.append(preprocess(img))
    return texts, np.stack(images)


def read(model, x: np.ndarray, vocab: list[str], batch: int = 16) -> list[str]:
    opts = ort.SessionOptions()
    s = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
                             opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = []
    for i in range(0, len(x), batch):
        idx = s.run(None, {name: x[i:i + batch]})[0].argmax(2)
        for row in idx:
            keep = np.ones(len(row), bool)
            keep[1:] = row[1:] != row[:-1]
            keep &= row != 0
            out.append("".join(vocab[k] for k in row[keep]).strip())  # edge spaces are padding, not text
    return out


def static_hw(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its input height/width fixed to 48x320 (batch stays dynamic).

    Works around onnxprune's recovery pre-pass (recover.add_missing_biases), which analyses the model
    without the given input shapes and fails on this model's dynamic height; see docs/benchmarks.md.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dims = out.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_value = H
    dims[3].Clear()
    dims[3].dim_value = W
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="MACs fractions kept")
    ap.add_argument("--configs", default="reconstruction:lstsq,activation:lstsq",
                    help="criterion:recover[:scope] (scope global unless given)")
    ap.add_argument("--test", type=int, default=60, help="strings scored")
    ap.add_argument("--calib", type=int, default=64, help="other strings for calibration")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=2.0, help="CER points above dense still 'working'")
    ap.add_argument("--show", type=int, default=6, help="example readings printed")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    levels = [float(v) for v in args.levels.split(",")]
    configs = [tuple((c + ":global").split(":")[:3]) if c.count(":") == 1 else tuple(c.split(":"))
               for c in args.configs.split(",")]

    started = time.time()
    path = zoo.fetch("ppocr_rec")
    dense = onnx.load(path)
    meta = {p.key: p.value for p in dense.metadata_props}
    vocab = ["blank"] + meta["character"].splitlines() + [" "]
    fonts = find_fonts()
    test_texts, x_test = make_set(args.test, 1, fonts, set(vocab))
    calib_texts, x_calib = make_set(args.calib, 2, fonts, set(vocab), avoid=frozenset(test_texts))

    dense_reads = read(dense, x_test, vocab)
    dense_cer = cer(test_texts, dense_reads)
    rows = []
    examples = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib_path = Path(tmp) / "calib.npz"
        np.savez(calib_path, x=x_calib)
        model_in = static_hw(dense)
        for crit, rec, scope in configs:
            for level in levels:
                t0 = time.time()
                try:
                    r = onnxprune.prune(model_in, calib=str(calib_path), criterion=crit, scope=scope, recover=rec,
                                        target_macs=level, round_to=args.round_to, bench_rounds=0)
                except Exception as exc:  # a failure is a result
                    rows.append((crit, f"{scope}:{rec}", level, None, None, None, f"{type(exc).__name__}: {exc}".splitlines()[0],
                                 time.time() - t0))
                    continue
                reads = read(r.model, x_test, vocab)
                macs = r.report["after"]["macs"] / r.report["before"]["macs"]
                params = r.report["after"]["params"] / r.report["before"]["params"]
                rows.append((crit, f"{scope}:{rec}", level, macs, params, cer(test_texts, reads), None, time.time() - t0))
                examples[crit, f"{scope}:{rec}", level] = reads

    print("## PP-OCRv4 recognizer (ppocr_rec) on rendered text: CER vs MACs kept\n")
    print(f"onnxprune {revision()}; {len(test_texts)} test strings ({sum(map(len, test_texts))} characters), "
          f"{len(calib_texts)} other strings for calibration (none identical to a test string), "
          f"fonts: {', '.join(Path(f).stem for f in fonts) or 'PIL default'}; input x 1x3x{H}x{W}, "
          f"round_to {args.round_to}; {time.time() - started:.0f} s.\n")
    print(f"Dense: CER {100 * dense_cer:.2f}%, exact strings {sum(a == b for a, b in zip(test_texts, dense_reads))}"
          f"/{len(test_texts)}.\n")
    print("| criterion | scope | recover | MACs target | MACs kept | params kept | CER % | CER - dense (points) | "
          "exact strings | prune s |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for crit, rec, level, macs, params, c, err, secs in rows:
        if err:
            print(f"| {crit} | {rec.split(':')[0]} | {rec.split(':')[1]} | {level:g} | error | | {err} | | | {secs:.0f} |")
            continue
        exact = sum(a == b for a, b in zip(test_texts, examples[crit, rec, level]))
        print(f"| {crit} | {rec.split(':')[0]} | {rec.split(':')[1]} | {level:g} | {macs:.3f} | {params:.3f} | {100 * c:.2f} | "
              f"{100 * (c - dense_cer):+.2f} | {exact}/{len(test_texts)} | {secs:.0f} |")
    for crit, rec in [(c, f"{sc}:{r}") for c, r, sc in configs]:
        ok = [(macs, level) for c2, r2, level, macs, _, c, err, _ in rows
              if (c2, r2) == (crit, rec) and not err and 100 * (c - dense_cer) <= args.tolerance]
        text = (f"MACs fraction {min(ok)[0]:.3f} (target {min(ok)[1]:g})" if ok else "none of the tested levels")
        print(f"\nLowest MACs kept with CER within {args.tolerance:g} points of dense ({crit} / {rec}): {text}.")

    if args.show and examples:
        print("\nExample readings (drawn -> dense -> pruned at each level):\n")
        crit, rec = configs[0][0], f"{configs[0][2]}:{configs[0][1]}"
        print("| drawn | dense | " + " | ".join(f"{lv:g}" for lv in levels) + " |")
        print("|---|---|" + "---|" * len(levels))
        for i in range(min(args.show, len(test_texts))):
            cells = [f"`{examples[crit, rec, lv][i]}`" if (crit, rec, lv) in examples else "" for lv in levels]
            print(f"| `{test_texts[i]}` | `{dense_reads[i]}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
