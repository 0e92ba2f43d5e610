#!/usr/bin/env python3
"""Where a pruning run's memory goes: RSS over time, with the onnxprune frames of the main thread at
every step of more than --step MB (up or down). One run in this process; synthetic calibration
samples (uniform noise) held in memory, so the data's own bytes count (tools/bench_calib_memory.py
gives peaks with the data read from a file).

    python tools/memory_timeline.py --model light_vgg19 --shape 3,224,224 --samples 32 \\
        --criterion reconstruction --recover sequential --target-macs 0.8
    python tools/memory_timeline.py --model light_vgg19 --shape 3,224,224 --samples 0 --ratio 0.3
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sampler(step_mb: float, started: float) -> None:
    """Print RSS and the onnxprune frames whenever RSS moved by more than `step_mb` since the last line."""
    page, main_id, last = os.sysconf("SC_PAGE_SIZE"), threading.main_thread().ident, 0.0
    while True:
        rss = int(open("/proc/self/statm").read().split()[1]) * page / 2 ** 20
        if abs(rss - last) > step_mb:
            frames = traceback.extract_stack(sys._current_frames()[main_id])
            mine = [f"{Path(f.filename).name}:{f.name}:{f.lineno}" for f in frames if "onnxprune" in f.filename]
            print(f"{time.time() - started:8.1f} s {rss:7.0f} MB  {' < '.join(mine[::-1][:5])}", flush=True)
            last = rss
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a zoo name (onnxprune/load/zoo.py) or a path")
    ap.add_argument("--shape", required=True, help="one sample's input shape without the batch, e.g. 3,224,224")
    ap.add_argument("--samples", type=int, default=32, help="calibration samples (0: no --calib)")
    ap.add_argument("--criterion", default=None)
    ap.add_argument("--recover", default=None)
    ap.add_argument("--scope", default=None)
    ap.add_argument("--target-macs", type=float, default=None)
    ap.add_argument("--ratio", type=float, default=None)
    ap.add_argument("--step", type=float, default=150.0, help="MB of RSS change that prints a line")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import numpy as np
    import onnx

    import onnxprune
    from onnxprune.load import zoo
    from onnxprune.load.data import Dataset

    model = onnx.load(str(zoo.fetch(args.model)) if not os.path.exists(args.model) else args.model)
    weights = {t.name for t in model.graph.initializer}
    name = next(i.name for i in model.graph.input if i.name not in weights)
    shape = tuple(int(d) for d in args.shape.split(","))
    options = {k: v for k, v in {"criterion": args.criterion, "recover": args.recover, "scope": args.scope,
                                 "target_macs": args.target_macs, "ratio": args.ratio}.items() if v is not None}
    if args.samples:
        rng = np.random.default_rng(0)
        data = Dataset({name: rng.uniform(-1, 1, (args.samples, 1) + shape).astype(np.float32)})
        options.update(calib=data, eval_data=data.take(4))
    started = time.time()
    threading.Thread(target=sampler, args=(args.step, started), daemon=True).start()
    onnxprune.prune(model, bench_rounds=0, input_shapes={name: (1,) + shape}, **options)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB, {time.time() - started:.1f} s, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
