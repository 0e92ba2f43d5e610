#!/usr/bin/env python3
"""Benchmark: NudeNet 320n (YOLOv8n) pruned by onnxprune, is the astronaut's face still found?

The detector (zoo 'nudenet_320n', from the nudenet wheel; class names from the model's `names`
metadata) looks at scikit-image's astronaut photo, preprocessed as nudenet does (pad right/bottom to a
square, resize to 320x320, RGB, /255). The output (1, 4 + C, N) is decoded into boxes (cx, cy, w, h)
and class scores, filtered at 0.2 and non-maximum suppressed per class (IoU 0.45). The dense model's
FACE_FEMALE box is the reference. Each pruned model (a calibration-data or magnitude criterion, global
or local scope, label-free recovery, at each fraction of MACs kept) passes if it reports a FACE_FEMALE
box with IoU > 0.5 against the reference and score > 0.25.

Calibration is 32 unlabelled crops / rescales / flips of scikit-image photos. Two sets are tried:
"with astronaut" (crops of astronaut, coffee, chelsea, rocket; never the exact test view) and "no
astronaut" (coffee, chelsea, rocket, immunohistochemistry: no face at all in the calibration data).

    pip install scikit-image pillow        # benchmark-only
    python tools/bench_detector.py
    python tools/bench_detector.py --configs with:activation:global:lstsq,no:l2:local:none --levels 0.8

A configuration is calibration-set:criterion:scope:recover.

Prints Markdown tables and exits 0.
"""

from __future__ import annotations

import argparse
import ast
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
from tasks_nudenet import yolo_nms  # noqa: E402
from onnxprune.load import zoo  # noqa: E402

SIZE = 320
LEVELS = (0.9, 0.8, 0.7, 0.6, 0.5)
FACE = "FACE_FEMALE"
CALIB_SETS = {"with": ("astronaut", "coffee", "chelsea", "rocket"),
              "no": ("coffee", "chelsea", "rocket", "immunohistochemistry")}




def letterbox(img: np.ndarray) -> tuple[np.ndarray, float]:
    """nudenet's preprocessing: pad right/bottom to a square, resize to 320, RGB, /255, NCHW."""
    from PIL import Image

    h, w = img.shape[:2]
    side = max(h, w)
    pad = np.zeros((side, side, 3), np.uint8)
    pad[:h, :w] = img[..., :3]
    x = np.asarray(Image.fromarray(pad).resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255.0
    return x.transpose(2, 0, 1), side / SIZE


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (x1, y1, x2, y2) with every row of b."""
    b = np.atleast_2d(b)
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def decode(out: np.ndarray, scale: float, conf: float = 0.2, nms_iou: float = 0.45) -> list[tuple[int, float, np.ndarray]]:
    """(class, score, box x1 y1 x2 y2 in image pixels) after per-class NMS, best first."""
    found = [(c, score, box * scale) for c, score, box in yolo_nms(out, conf, nms_iou)]
    return sorted(found, key=lambda d: -d[1])


def detect(model, x: np.ndarray, scale: float):
    s = ort.InferenceSession(model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model),
                             providers=["CPUExecutionProvider"])
    return decode(s.run(None, {s.get_inputs()[0].name: x[None]})[0], scale)


def calibration(names: tuple[str, ...], n: int, seed: int) -> np.ndarray:
    """`n` crops (50-100% of each side), rescales and horizontal flips of the named skimage photos.
    The astronaut is never used whole and unflipped (that is the test view)."""
    import skimage.data as sd

    rng = np.random.default_rng(seed)
    photos = [getattr(sd, name)() for name in names]
    out = []
    while len(out) < n:
        k = len(out) % len(photos)
        img = photos[k]
        h, w = img.shape[:2]
        fy, fx = rng.uniform(0.5, 1.0, 2)
        ch, cw = max(int(h * fy), 32), max(int(w * fx), 32)
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        flip = rng.random() < 0.5
        if names[k] == "astronaut" and (ch, cw) == (h, w) and not flip:
            continue
        crop = img[y0:y0 + ch, x0:x0 + cw]
        out.append(letterbox(np.ascontiguousarray(crop[:, ::-1] if flip else crop))[0])
    return np.stack(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)), help="MACs fractions kept")
    ap.add_argument("--configs", default="with:reconstruction:global:lstsq,with:activation:global:lstsq,"
                    "with:l2:local:lstsq,no:reconstruction:global:lstsq",
                    help="calibration-set:criterion:scope:recover, comma-separated (sets: with, no)")
    ap.add_argument("--calib", type=int, default=32, help="calibration images per set")
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--top", type=int, default=6, help="dense detections printed")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    levels = [float(v) for v in args.levels.split(",")]
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]

    import skimage
    import skimage.data as sd

    started = time.time()
    path = zoo.fetch("nudenet_320n")
    dense = onnx.load(path)
    meta = {p.key: p.value for p in dense.metadata_props}
    names = ast.literal_eval(meta["names"])
    face_id = next(k for k, v in names.items() if v == FACE)
    photo = sd.astronaut()
    x, scale = letterbox(photo)
    dense_dets = detect(dense, x, scale)
    faces = [d for d in dense_dets if d[0] == face_id]
    if not faces:
        print(f"the dense model finds no {FACE} in the astronaut photo; nothing to compare")
        return 1
    ref = faces[0][2]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cs in dict.fromkeys(c[0] for c in configs):
            np.savez(Path(tmp) / f"calib_{cs}.npz", images=calibration(CALIB_SETS[cs], args.calib, seed=0))
        for cs, crit, scope, rec in configs:
            for level in levels:
                t0 = time.time()
                try:
                    r = onnxprune.prune(path, calib=str(Path(tmp) / f"calib_{cs}.npz"), criterion=crit, scope=scope,
                                        recover=rec, target_macs=level, round_to=args.round_to, bench_rounds=0,
                                        input_shapes={"images": (1, 3, SIZE, SIZE)})
                except Exception as exc:  # a failure is a result
                    rows.append((cs, crit, scope, rec, level, None, None,
                                 f"{type(exc).__name__}: {exc}".splitlines()[0], time.time() - t0))
                    continue
                dets = detect(r.model, x, scale)
                macs = r.report["after"]["macs"] / r.report["before"]["macs"]
                rows.append((cs, crit, scope, rec, level, macs, dets, r.report["fidelity"].get("cosine"),
                             time.time() - t0))

    print("## NudeNet 320n (YOLOv8n) on scikit-image's astronaut: is the face still found?\n")
    print(f"onnxprune {revision()}; scikit-image {skimage.__version__}; input images 1x3x{SIZE}x{SIZE}; "
          f"round_to {args.round_to}; {args.calib} calibration images per set; {time.time() - started:.0f} s.\n")
    if args.top > 0:
        print("Dense model, top detections (score >= 0.2 after NMS; boxes x1, y1, x2, y2 in the 512x512 photo):\n")
        print("| class | score | box |")
        print("|---|---:|---|")
        for c, s, b in dense_dets[:args.top]:
            print(f"| {names[c]} | {s:.3f} | {', '.join(f'{v:.0f}' for v in b)} |")
        print()
    print(f"Reference face box: {', '.join(f'{v:.0f}' for v in ref)} ({FACE}, score {faces[0][1]:.3f}).\n")
    print(f"Pruned models: best {FACE} box against the reference (found = IoU > 0.5 and score > 0.25).\n")
    print("| calibration | criterion | scope | recover | MACs target | MACs kept | face IoU | face score | found | "
          "detections | output cosine (calib) | prune s |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    lowest = {}
    for cs, crit, scope, rec, level, macs, dets, extra, secs in rows:
        label = f"{cs} astronaut"
        if dets is None:
            print(f"| {label} | {crit} | {scope} | {rec} | {level:g} | error | | | {extra} | | | {secs:.0f} |")
            continue
        cands = [(iou(ref, b)[0], s) for c, s, b in dets if c == face_id]
        best = max(cands, key=lambda t: (t[0] > 0.5 and t[1] > 0.25, t[1], t[0])) if cands else (0.0, 0.0)
        found = best[0] > 0.5 and best[1] > 0.25
        if found:
            key = (cs, crit, scope, rec)
            lowest[key] = min(lowest.get(key, (2.0, 0.0)), (macs, level))
        cos = f"{extra:.4f}" if isinstance(extra, float) else ""
        print(f"| {label} | {crit} | {scope} | {rec} | {level:g} | {macs:.3f} | {best[0]:.3f} | {best[1]:.3f} | "
              f"{'yes' if found else 'no'} | {len(dets)} | {cos} | {secs:.0f} |")
    print()
    for cs, crit, scope, rec in configs:
        got = lowest.get((cs, crit, scope, rec))
        text = f"MACs fraction {got[0]:.3f} (target {got[1]:g})" if got else "none of the tested levels"
        print(f"- lowest MACs kept that still finds the face ({cs} astronaut in calibration, {crit} / {scope} / "
              f"{rec}): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
