#!/usr/bin/env python3
"""What is alive during sequential recovery: at the 1st, 10th and 16th layer solve of one prune
(data-aware, in memory, as a library user calls it), the process's resident and anonymous memory
(/proc/self/smaps_rollup), numpy arrays over 8 MB, ONNX Runtime sessions and ModelProtos with the
bytes of their inline weights. It found VGG-19's folded weights held twice (docs/benchmarks.md,
"VGG-19 with --calib").

    python tools/live_objects.py --model light_vgg19 --shape 3,224,224 --samples 32 --target-macs 0.8
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def report(tag: str) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    wanted = ("Rss", "Anonymous", "Pss_File", "Pss_Anon")
    rollup = [" ".join(line.split()) for line in open("/proc/self/smaps_rollup").read().splitlines()
              if line.split(":")[0] in wanted]
    print(f"--- {tag}: " + "; ".join(rollup), flush=True)
    objects = gc.get_objects()
    for a in (o for o in objects if isinstance(o, np.ndarray) and o.nbytes > 8e6):
        print(f"   array {a.shape} {a.dtype} {a.nbytes / 2**20:.0f} MB base={type(a.base).__name__}")
    print("   sessions alive:", sum(1 for o in objects if isinstance(o, ort.InferenceSession)))
    for p in (o for o in objects if isinstance(o, onnx.ModelProto)):
        inline = sum(len(t.raw_data) for t in p.graph.initializer)
        print(f"   ModelProto nodes={len(p.graph.node)} inline weights {inline / 2**20:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a zoo name (onnxprune/load/zoo.py) or a path")
    ap.add_argument("--shape", required=True, help="one sample's input shape without the batch")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--target-macs", type=float, default=0.8)
    ap.add_argument("--criterion", default="reconstruction")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import numpy as np
    import onnx

    import onnxprune
    import onnxprune.recover.sequential as sequential
    from onnxprune.load import zoo
    from onnxprune.load.data import Dataset

    calls, solve = [0], sequential.solve_consumer

    def watched(*a, **k):
        calls[0] += 1
        if calls[0] in (1, 10, 16):
            report(f"solve #{calls[0]}")
        return solve(*a, **k)
    sequential.solve_consumer = watched
    path = args.model if Path(args.model).exists() else str(zoo.fetch(args.model))
    model = onnx.load(path)
    weights = {t.name for t in model.graph.initializer}
    name = next(i.name for i in model.graph.input if i.name not in weights)
    shape = tuple(int(d) for d in args.shape.split(","))
    data = Dataset({name: np.random.default_rng(0).uniform(-1, 1, (args.samples, 1) + shape).astype(np.float32)})
    onnxprune.prune(model, bench_rounds=0, input_shapes={name: (1,) + shape}, calib=data, eval_data=data.take(4),
                    criterion=args.criterion, recover="sequential", target_macs=args.target_macs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
