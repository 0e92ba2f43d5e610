#!/usr/bin/env python3
"""The held-out check between criteria (tools/criterion_pick.py) on the real models' tasks:
which criterion it picks from the task's own calibration samples, each candidate's held-out output
error, and the check's wall time. The task score of the pick is the matching cell of tools/bench_tasks.py
run with the same samples and seed (the check only decides; the final prune is that run).

    OPENBLAS_NUM_THREADS=1 nice -n 5 python tools/bench_criterion_pick.py --models digits_cnn,ppocr_cls \
        --level 0.5 --seeds 0,1 --json docs/bench_issue9_s12_pick.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))


from benchlib import run_queue, task_files  # noqa: E402


def one(name: str, level: float, seed: int, calib_n: int, work: Path) -> dict:
    """Run the held-out check for one task, level and probe seed."""
    import onnx

    import onnxprune.api
    import tasks
    from onnxprune.options import options_from_keywords
    from criterion_pick import pick_criterion
    from onnxprune.stages import as_dataset

    task = tasks.get(name)
    model_path, calib_path = task_files(task, name, work, calib_n)
    options, _ = options_from_keywords({"target_macs": level, "input_shapes": task.input_shapes(), "seed": seed})
    model = onnx.load(str(model_path))
    data = as_dataset(str(calib_path), model, None, options.input_shapes)
    t0 = time.time()
    pick = pick_criterion(str(model_path), options, data, onnxprune.api.prune)
    return {"model": name, "level": level, "seed": seed, "calib_n": calib_n, **pick.as_dict(),
            "check_s": time.time() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated task names (tools/tasks.py)")
    ap.add_argument("--level", type=float, default=0.5, help="MACs fraction kept")
    ap.add_argument("--seeds", default="0", help="probe seeds, comma-separated")
    ap.add_argument("--calib-n", type=int, default=32, help="calibration samples (split in two by the check)")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space cap of this process")
    ap.add_argument("--json", help="append each result here (a JSON list, rewritten after each run)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="pick_") as tmp:
        jobs = [(name, seed) for name in args.models.split(",") for seed in (int(s) for s in args.seeds.split(","))]
        run_queue(jobs, lambda name, seed: one(name, args.level, seed, args.calib_n, Path(tmp)), args.json, args.mem_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
