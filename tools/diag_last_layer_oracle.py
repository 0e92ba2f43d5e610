#!/usr/bin/env python3
"""The best any last-layer re-solve could do: a pruned NudeNet's class convs refit on the TEST images.

For each 1x1 Conv of the pruned model whose output columns are an output Sigmoid's logits (found by value,
as recover/logit_weights.py does), the weights are refit by least squares from the pruned model's own
input features on the test images to the dense model's logits there (plain, and weighted by p(1-p) +
floor as `--recover sequential_logit`), then the face F1 and the class-logit error are measured as
tools/diag_metric_floor.py does. An oracle (it fits the test set): if even this stays far from the bar,
the lost information is upstream of the last layer and no re-solve of it can bring it back. Usage:

    python tools/diag_last_layer_oracle.py nudenet_320n_wide /tmp/plans/d0_0.8.onnx [...]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import diag_metric_floor as floor  # noqa: E402
import tasks  # noqa: E402


def fetch(model, names: list[str], ev) -> dict[str, np.ndarray]:
    """`names` (intermediate tensors) on every test image, joined on the batch axis."""
    import onnx
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names)
    sess = tasks.session(probe)
    runs = [sess.run(names, feed) for feed in ev.feeds]
    return {t: np.concatenate([r[i] for r in runs]) for i, t in enumerate(names)}


def class_convs(model, ev) -> list:
    """1x1 Conv nodes (with a bias) whose every output column occurs among an output Sigmoid's inputs."""
    from onnxprune.recover.logit_weights import matching_columns
    from onnxprune.score.logit_outputs import squashed_nodes
    g = model.graph
    inits = {t.name for t in g.initializer}
    sig = [g.node[i].input[0] for i in squashed_nodes(model) if g.node[i].op_type == "Sigmoid"]
    convs = [n for n in g.node if n.op_type == "Conv" and len(n.input) == 3 and n.input[1] in inits]
    one = tasks.EvalSet(ev.feeds[:1], [None])
    got = fetch(model, sig + [n.output[0] for n in convs], one)
    pool = np.concatenate([got[t].ravel() for t in sig])
    return [n for n in convs if matching_columns(got[n.output[0]], 1, pool).all()]


def refit(pruned, dense, ev, weighted: bool, floor_w: float):
    """A copy of `pruned` with its class convs refit on the test images (module doc)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    convs = class_convs(model, ev)
    xs = fetch(pruned, [n.input[0] for n in convs], ev)
    ys = fetch(dense, [n.output[0] for n in convs], ev)
    inits = {t.name: t for t in model.graph.initializer}
    for n in convs:
        w = numpy_helper.to_array(inits[n.input[1]])
        if w.shape[2:] != (1, 1):
            continue
        x = xs[n.input[0]].transpose(0, 2, 3, 1).reshape(-1, w.shape[1]).astype(np.float64)
        y = ys[n.output[0]].transpose(0, 2, 3, 1).reshape(-1, w.shape[0]).astype(np.float64)
        x1 = np.c_[x, np.ones(len(x))]
        theta = np.empty((x1.shape[1], y.shape[1]))
        for j in range(y.shape[1]):
            p = 1 / (1 + np.exp(-y[:, j]))
            r = np.sqrt(p * (1 - p) + floor_w) if weighted else np.ones(len(y))
            theta[:, j] = np.linalg.lstsq(x1 * r[:, None], y[:, j] * r, rcond=None)[0]
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(theta[:-1].T.reshape(w.shape).astype(np.float32), n.input[1]))
        inits[n.input[2]].CopyFrom(numpy_helper.from_array(theta[-1].astype(np.float32), n.input[2]))
    return model


def main() -> int:
    warnings.filterwarnings("ignore")
    import onnx
    if len(sys.argv) < 3:
        raise SystemExit(__doc__.strip().splitlines()[-1].strip())
    task = tasks.get(sys.argv[1])
    dense, ev = task.model(), task.evaluation()
    dense_raw = floor.logits(dense, ev)
    ref = floor.detections(task, dense_raw)
    for path in sys.argv[2:]:
        pruned = onnx.load(path)
        for kind, model in (("as pruned", pruned), ("oracle plain", refit(pruned, dense, ev, False, 0)),
                            ("oracle weighted 1e-3", refit(pruned, dense, ev, True, 1e-3))):
            raw = floor.logits(model, ev)
            err = floor.logit_error(dense_raw, raw)
            f1 = 100 * tasks.match_f1(ref, floor.detections(task, raw))
            print(f"{path} {kind:>22}: F1 {f1:6.2f}  all rms {err['all rms']:.3f}  band rms {err['band rms']:.3f} "
                  f"(mean {err['band mean']:+.3f})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
