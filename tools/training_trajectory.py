"""The loss trajectory of a short in-graph training run, for comparing two checkouts of onnxprune.

40 AdamW steps (lr 1e-3, weight decay 0.01, batch 64, one thread) on the digits CNN with the
digits calibration labels, through TrainStep as fine-tuning runs it. Run it with the onnxprune of
each checkout and compare the printed losses, e.g. before and after a change to the gradient rules:

    python tools/training_trajectory.py --root /work/main > before.json
    python tools/training_trajectory.py > after.json
    python tools/training_trajectory.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def losses(root: Path, steps: int = 40) -> list[float]:
    sys.path.insert(0, str(root))
    import numpy as np
    import onnx
    from onnxprune.autodiff import build_training_graph, read_weights
    from onnxprune.autodiff.optim import AdamW, FlatParams
    from onnxprune.autodiff.runner import TrainStep
    import onnxprune
    assert Path(onnxprune.__file__).resolve().is_relative_to(root), f"imported {onnxprune.__file__}, not {root}'s"

    model = onnx.load(str(HERE / "fixtures" / "digits_cnn.onnx"))
    data = np.load(HERE / "fixtures" / "digits_calib.npz")
    tg = build_training_graph(model)
    params = FlatParams(read_weights(model, tg.trainable))
    step, opt = TrainStep(tg, params, 1), AdamW(params, weight_decay=0.01)
    out = []
    for i in range(steps):
        idx = np.arange(i * 32, i * 32 + 64) % len(data["input"])
        loss, _ = step({"input": np.ascontiguousarray(data["input"][idx])}, data["labels"][idx].astype(np.int64))
        opt.step(1e-3)
        out.append(loss)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE, help="checkout whose onnxprune trains (default: this one)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar="JSON", help="two saved trajectories to compare")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
        print(f"{len(a)} steps; loss {a[0]:.5f} -> {a[-1]:.5f} vs {b[0]:.5f} -> {b[-1]:.5f}; "
              f"worst relative difference {worst:.1e}")
        return
    print(json.dumps(losses(args.root.resolve())))


if __name__ == "__main__":
    main()
