"""The models and data of the in-process fine-tuning benchmarks (bench_finetune_goal, bench_batch_view):
each case is (dense model, calibration, unlabelled training Dataset, score(model) -> points, input shapes).
bench_iterative runs the CLI instead and writes the same data as files (its own cases)."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxprune.load.data import Dataset, load_npz  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402

# Pruned starts as PruneOptions fields, spelled out (the defaults may change; the old starts stay
# reproducible). The CLI flags of each are bench_iterative.STARTS.
STARTS = {
    "default": {},
    "recon": {"criterion": "reconstruction", "scope": "global", "recover": "sequential"},
    "fisher50": {"criterion": "fisher", "scope": "global", "recover": "sequential", "max_layer_ratio": 0.5},
    "fisherrecon50": {"criterion": "fisher_recon", "scope": "global", "recover": "sequential",
                      "max_layer_ratio": 0.5},
}


def digits_case(train_n: int, calib_n: int | None = None):
    """The digits CNN: test accuracy on the fixture's 397 test digits; its training images unlabelled."""
    fixtures = ROOT / "fixtures"
    test = load_npz(fixtures / "digits_test.npz", {"input": 4})
    train = load_npz(fixtures / "digits_train.npz", {"input": 4}, limit=train_n)
    calib = str(fixtures / "digits_calib.npz")  # as the CLI reads it; calib_n cuts it
    if calib_n is not None:
        calib = Dataset(dict(load_npz(calib, {"input": 4}, limit=calib_n).inputs))

    def score(model) -> float:
        out = session(model).run(None, {"input": test.inputs["input"][:, 0]})[0]
        return 100 * float((out.argmax(1) == test.labels).mean())
    return onnx.load(str(fixtures / "digits_cnn.onnx")), calib, \
        Dataset({"input": train.inputs["input"]}), score, None


def task_case(name: str, train_n: int, eval_n: int | None = None, calib_n: int = 32):
    """A task of tools/tasks.py. eval_n: evaluation samples (default: the task's own count; more makes a
    point finer than a sample); calib_n: calibration samples the pruning reads."""
    import tasks
    task = tasks.get(name)
    ev = task.evaluation(eval_n)
    dense = task.model()
    dense_preds = task.predict(session(dense), ev)
    train = task.calibration(train_n)  # disjoint from the evaluation set; unlabelled
    key = next(iter(train))
    rank = len(dense.graph.input[0].type.tensor_type.shape.dim)
    per_sample = train[key].ndim == rank + 1  # some tasks stack samples as (N, 1, ...) already
    calib = task.calibration(calib_n)
    calib = Dataset({k: v for k, v in calib.items()}) if per_sample else [calib]
    train = Dataset({key: train[key] if per_sample else train[key][:, None]})

    def score(model) -> float:
        return task.score(task.predict(session(model), ev), ev, dense_preds)["score"]
    return dense, calib, train, score, task.input_shapes()
