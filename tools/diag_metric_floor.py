#!/usr/bin/env python3
"""How much class-logit error a NudeNet task's face F1 tolerates, and how much a pruned model makes.

1. The floor: the dense model's class logits on the test set plus Gaussian noise of std s (logit space,
   every class row of every anchor, several noise seeds), decoded as nudenet does and scored against the
   unperturbed dense detections; also the dense model with its weights rounded to fp16, and through ORT's
   quantize_static (QDQ int8, calibrated on the task's calibration set) with --int8.
2. Each pruned model given: its face F1 and its class-logit error (pruned - dense) over all anchors and
   in the decision band (dense probability 0.05-0.5 of a class, where a threshold of 0.2 is crossed).

Logits are read from the models' logit view (onnxprune.score.logit_outputs: the output Sigmoid made an
Identity), not from clipped probabilities. Usage:

    python tools/diag_metric_floor.py nudenet_320n_wide [pruned.onnx ...] --sigmas 0.02,0.05,0.1,0.2 --int8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tasks  # noqa: E402

BAND = (0.05, 0.5)  # dense probabilities whose class can cross nudenet's 0.2 under a logit error of ~1


def logits(model, ev) -> list[np.ndarray]:
    """Per test image, the raw output (1, 4 + classes, anchors) with the class rows as logits: from the
    logit view, or inverted from the probabilities where a Q/DQ pair sits after the Sigmoid (int8)."""
    from onnxprune.score.logit_outputs import logit_view
    view = logit_view(model)
    raw = [o[0].astype(np.float64) for o in (tasks.session(view or model).run(None, f) for f in ev.feeds)]
    if view is None:
        for r in raw:
            p = np.clip(r[0, 4:], 1e-7, 1 - 1e-7)
            r[0, 4:] = np.log(p / (1 - p))
    return raw


def detections(task, raw: list[np.ndarray], noise: float = 0.0, rng: np.random.Generator | None = None) -> list:
    """Face detections of each image after squashing its (optionally perturbed) class logits."""
    faces, out = task.face_ids(), []
    for r in raw:
        r = r.copy()
        cls = r[0, 4:]
        if noise:
            cls = cls + rng.normal(0.0, noise, cls.shape)
        r[0, 4:] = 1 / (1 + np.exp(-cls))
        out.append([d for d in task.decode(r.astype(np.float32)) if d[0] in faces])
    return out


def near_threshold(task, raw: list[np.ndarray], delta: float, conf: float = 0.2) -> tuple[int, int]:
    """Face detections within `delta` (logit) above nudenet's threshold, and candidates within `delta`
    below it: the faces a logit error of `delta` can remove or add (NMS and class ties aside)."""
    z = np.log(conf / (1 - conf))
    faces = task.face_ids()

    def count(c: float) -> int:
        return sum(sum(d[0] in faces for d in task.decode(_squashed(r), conf=c)) for r in raw)
    at, up, down = count(conf), count(1 / (1 + np.exp(-(z + delta)))), count(1 / (1 + np.exp(-(z - delta))))
    return at - up, down - at


def _squashed(r: np.ndarray) -> np.ndarray:
    out = r.copy()
    out[0, 4:] = 1 / (1 + np.exp(-out[0, 4:]))
    return out.astype(np.float32)


def logit_error(dense: list[np.ndarray], pruned: list[np.ndarray]) -> dict[str, float]:
    """Mean / sd / rms of the class-logit error over all (anchor, class) cells and in the decision band."""
    d = np.concatenate([r[0, 4:] for r in dense], 1)
    e = np.concatenate([r[0, 4:] for r in pruned], 1) - d
    p = 1 / (1 + np.exp(-d))
    band = (p >= BAND[0]) & (p < BAND[1])
    out = {}
    for name, m in (("all", np.ones_like(band)), ("band", band)):
        x = e[m]
        out.update({f"{name} n": float(m.sum()), f"{name} mean": float(x.mean()), f"{name} sd": float(x.std()),
                    f"{name} rms": float(np.sqrt((x ** 2).mean()))})
    return out


def fp16_weights(model):
    """The model with every float initializer rounded to fp16 and back (fp16 storage's weight error)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), t.name))
    return m


def int8_qdq(model, calib: dict[str, np.ndarray]):
    """quantize_static (QDQ, int8 activations and weights, per-channel) calibrated on `calib`, with the
    output Sigmoid and the nodes writing graph outputs left in float: quantized, YOLO's output Concat
    shares one scale between box pixels (0-320) and probabilities (F1 0 here)."""
    import onnx

    from onnxprune.score.logit_outputs import squashed_nodes
    outs = {o.name for o in model.graph.output}
    keep = [model.graph.node[i].name for i in squashed_nodes(model)]
    keep += [n.name for n in model.graph.node if outs.intersection(n.output)]
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{k: v[i:i + 1] for k, v in calib.items()} for i in range(len(next(iter(calib.values()))))])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
        return onnx.load(str(dst))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task")
    ap.add_argument("pruned", nargs="*")
    ap.add_argument("--sigmas", default="0.02,0.05,0.1,0.2")
    ap.add_argument("--noise-seeds", type=int, default=5)
    ap.add_argument("--int8", action="store_true", help="also ORT quantize_static QDQ int8 (slow-ish)")
    ap.add_argument("--json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import onnx
    task = tasks.get(args.task)
    model, ev = task.model(), task.evaluation()
    dense = logits(model, ev)
    ref = detections(task, dense)
    n_ref = sum(map(len, ref))
    rows: list[dict] = []

    def report(kind: str, f1s: list[float], **more) -> None:
        row = {"kind": kind, "f1": float(np.mean(f1s)), "f1 min": float(np.min(f1s)), "f1 max": float(np.max(f1s)),
               "runs": len(f1s), **more}
        rows.append(row)
        extra = "  ".join(f"{k} {v:.3g}" for k, v in more.items())
        print(f"{kind:>32}: F1 {row['f1']:6.2f} (min {row['f1 min']:.2f}, max {row['f1 max']:.2f}, {len(f1s)} runs)  {extra}", flush=True)
        if args.json:
            tmp = Path(args.json + ".tmp")
            tmp.write_text(json.dumps({"task": args.task, "dense faces": n_ref, "rows": rows}, indent=1))
            tmp.replace(args.json)

    print(f"{args.task}: {len(ev.feeds)} images, {n_ref} dense faces", flush=True)
    for delta in (0.05, 0.1, 0.25, 0.5):
        above, below = near_threshold(task, dense, delta)
        rows.append({"kind": "near threshold", "delta": delta, "faces above": above, "candidates below": below})
        print(f"  dense faces within {delta:g} logit above the 0.2 threshold: {above}; face candidates within "
              f"{delta:g} below: {below}", flush=True)
    for s in (float(x) for x in args.sigmas.split(",")):
        f1s = [100 * tasks.match_f1(ref, detections(task, dense, s, np.random.default_rng(k))) for k in range(args.noise_seeds)]
        report(f"noise sd {s:g}", f1s, sigma=s)
    variants = [("fp16 weights", lambda: fp16_weights(model))]
    if args.int8:
        variants.append(("int8 QDQ (quantize_static)", lambda: int8_qdq(model, task.calibration(32))))
    variants += [(path, lambda path=path: onnx.load(path)) for path in args.pruned]
    for kind, make in variants:
        raw = logits(make(), ev)
        report(kind, [100 * tasks.match_f1(ref, detections(task, raw))], **logit_error(dense, raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
