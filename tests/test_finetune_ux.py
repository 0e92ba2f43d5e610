"""Fine-tuning as a user expects (issue 10): held-out choice with epoch 0 as a candidate, checkpoints
and --resume after a kill, NaN stops, time budgets, bad training data, augmentation, folders, --steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import FIXTURES
from onnxprune.autodiff.weights import read_weights
from onnxprune.cli.main import main
from onnxprune.errors import ValidationError
from onnxprune.load.augment import augment_batch
from onnxprune.load.data import Dataset, load_npz
from onnxprune.recover.checkpoint import checkpoint_path
from onnxprune.recover.finetune import finetune

DENSE = FIXTURES / "digits_cnn.onnx"
TRAIN = load_npz(FIXTURES / "digits_train.npz", {"input": 4})
UNLABELLED = Dataset({"input": TRAIN.inputs["input"][:600]})
PRUNE = ["--target-macs", "0.5", "--calib", str(FIXTURES / "digits_calib.npz"), "--round-to", "1",
         "--criterion", "l2", "--scope", "local", "--recover", "none", "--bench-rounds", "0", "-q"]  # fast pruning


def _weights(path) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "onnxprune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_run_resumes_from_its_last_epoch_and_matches_an_uninterrupted_one(tmp_path):
    train = tmp_path / "train.npz"
    np.savez(train, input=TRAIN.inputs["input"])
    common = ["prune", str(DENSE), *PRUNE, "--train-data", str(train), "--finetune", "3", "--threads", "1"]
    whole, cut = tmp_path / "whole.onnx", tmp_path / "cut.onnx"
    assert main([*common, "-o", str(whole)]) == 0
    assert not checkpoint_path(whole).exists()  # removed once the output is written

    proc = _cli(*common, "-o", str(cut))
    ckpt, deadline = checkpoint_path(cut), time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "no checkpoint after the first epoch"
    assert not cut.exists()  # the output is never half-written
    again = _cli(*common, "-o", str(cut))  # without --resume a checkpoint is never silently overwritten
    assert again.wait(timeout=300) == 2 and "--resume" in again.stderr.read()
    resumed = _cli(*common, "-o", str(cut), "--resume", "--report", str(tmp_path / "r.json"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert not ckpt.exists()
    import json
    report = json.loads((tmp_path / "r.json").read_text())["finetune"]
    assert report["resumed_from"] >= 1 and [h["epoch"] for h in report["history"]] == [0, 1, 2, 3]
    a, b = _weights(whole), _weights(cut)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "c.npz"
    finetune(str(DENSE), UNLABELLED, 1, teacher=str(DENSE), progress=False, checkpoint=str(ckpt))
    with pytest.raises(Exception, match="different run"):
        finetune(str(DENSE), UNLABELLED, 1, teacher=str(DENSE), lr=0.5, progress=False, checkpoint=str(ckpt),
                 resume=True)


def test_epoch_zero_wins_when_training_only_hurts():
    pruned = onnx.load(str(DENSE))
    result = finetune(pruned, UNLABELLED, 2, teacher=str(DENSE), lr=3.0, progress=False)  # the student is the teacher
    assert result.best_epoch == 0
    for name, w in read_weights(pruned, result.trainable).items():
        np.testing.assert_array_equal(read_weights(result.model, [name])[name], w)


def _nan_after(monkeypatch, calls: int) -> None:
    from onnxprune.autodiff import runner
    original, seen = runner.TrainStep.__call__, {"n": 0}

    def step(self, feeds, target):
        seen["n"] += 1
        loss, logits = original(self, feeds, target)
        return (float("nan") if seen["n"] > calls else loss), logits
    monkeypatch.setattr(runner.TrainStep, "__call__", step)


def test_nan_keeps_the_last_good_epoch(monkeypatch, caplog):
    import logging
    monkeypatch.setattr(logging.getLogger("onnxprune"), "handlers", [caplog.handler])  # the CLI stops propagation
    caplog.set_level(logging.WARNING, logger="onnxprune")
    _nan_after(monkeypatch, 12)  # 540 samples / 64: 9 steps an epoch, so epoch 2 goes NaN
    result = finetune(str(DENSE), UNLABELLED, 3, teacher=str(DENSE), progress=False, lr=1e-3)  # no range test steps
    assert result.stopped == "nan" and [h["epoch"] for h in result.history] == [0, 1]
    assert "NaN" in caplog.text and all(np.isfinite(read_weights(result.model, [n])[n]).all() for n in result.trainable)


def test_nan_before_any_epoch_finished_exits_1(monkeypatch, tmp_path, capsys):
    _nan_after(monkeypatch, 0)
    code = main(["prune", str(DENSE), *PRUNE, "--finetune", "2", "-o", str(tmp_path / "o.onnx")])
    assert code == 1 and "NaN" in capsys.readouterr().err and not (tmp_path / "o.onnx").exists()


def test_time_budget_alone_stops_training():
    result = finetune(str(DENSE), UNLABELLED, None, teacher=str(DENSE), progress=False, minutes=0.002)
    assert result.stopped == "time" and len(result.history) >= 2


def test_training_data_that_does_not_fit_the_model_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((10, 1, 1, 9, 9), np.float32))
    code = main(["prune", str(DENSE), *PRUNE, "--finetune", "1", "--train-data", str(bad), "-o", str(tmp_path / "o.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'input'" in err and "9x9" in err and "8x8" in err


def test_labels_flag_without_labels_exits_2(tmp_path, capsys):
    data = tmp_path / "x.npz"
    np.savez(data, input=TRAIN.inputs["input"][:50])
    code = main(["prune", str(DENSE), *PRUNE, "--finetune", "1", "--labels", "--train-data", str(data),
                 "-o", str(tmp_path / "o.onnx")])
    assert code == 2 and "labels" in capsys.readouterr().err


def test_augmentations_keep_shapes_and_flip_mirrors():
    x = np.arange(8 * 3 * 4 * 5, dtype=np.float32).reshape(8, 3, 4, 5)
    out = augment_batch({"x": x}, ("flip",), np.random.default_rng(1))["x"]
    flipped = [np.array_equal(a, b[:, :, ::-1]) for a, b in zip(out, x)]
    assert all(f or np.array_equal(a, b) for f, a, b in zip(flipped, out, x)) and 0 < sum(flipped) < 8
    out = augment_batch({"x": x}, ("flip", "crop", "scale"), np.random.default_rng(0))["x"]
    assert out.shape == x.shape and out.dtype == x.dtype


def test_train_data_folder_of_arrays_and_augmentation(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        np.save(folder / f"{i:03d}.npy", TRAIN.inputs["input"][i])
    out = tmp_path / "o.onnx"
    assert main(["prune", str(DENSE), *PRUNE, "--finetune", "1", "--train-data", str(folder), "--augment", "crop",
                 "-o", str(out), "--report", str(tmp_path / "r.json")]) == 0
    import json
    assert json.loads((tmp_path / "r.json").read_text())["finetune"]["samples"] == 40


def test_iterative_steps_reach_the_target(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["prune", str(DENSE), *PRUNE, "--finetune", "2", "--steps", "2", "--train-data",
                 str(FIXTURES / "digits_calib.npz"), "-o", str(out), "--report", str(report)]) == 0
    import json
    rep = json.loads(report.read_text())
    trail = rep["iterative"]["trail"]
    assert [t["step"] for t in trail] == [1, 2] and trail[0]["kept"] > trail[1]["kept"]
    assert abs(rep["after"]["macs"] / rep["before"]["macs"] - 0.5) < 0.05
    assert abs(trail[1]["kept"] - 0.5) < 0.05
    assert not list(tmp_path.glob("*checkpoint*"))


def test_micro_batches_give_the_batch_gradient():
    from onnxprune.autodiff.builder import build_training_graph
    from onnxprune.autodiff.optim import FlatParams
    from onnxprune.autodiff.runner import TrainStep
    from onnxprune.recover.microbatch import MicroBatched, activation_bytes, micro_batch

    model = onnx.load(str(DENSE))
    tg = build_training_graph(model, None, "cross_entropy", input_shapes={"input": (1, 1, 8, 8)})
    params = FlatParams(read_weights(model, tg.trainable))
    step = TrainStep(tg, params)
    feeds, labels = {"input": TRAIN.inputs["input"][:23, 0]}, TRAIN.labels[:23].astype(np.int64)
    loss, logits = step(feeds, labels)
    whole = params.grad.copy()
    part_loss, part_logits = MicroBatched(step, params, 5)(feeds, labels)
    np.testing.assert_allclose(params.grad, whole, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(part_loss, loss, rtol=1e-5)
    np.testing.assert_allclose(part_logits, logits, rtol=1e-5, atol=1e-5)
    per_sample = activation_bytes(model, {"input": (1, 1, 8, 8)})
    assert micro_batch(64, per_sample, budget_mb=per_sample * 10 / 2**20) == 10


def test_steps_need_a_reachable_target_and_a_budget(tmp_path, capsys):
    base = ["prune", str(DENSE), "--calib", str(FIXTURES / "digits_calib.npz"), "--steps", "2", "--bench-rounds", "0",
            "-o", str(tmp_path / "o.onnx"), "-q"]
    assert main([*base, "--target-latency", "0.5", "--finetune", "1"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main([*base, "--ratio", "0.3"]) == 2  # without training the steps re-score: MACs or parameters only
    assert "--target-macs" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_steps_without_training_prune_stepwise(tmp_path):
    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    assert main(["prune", str(DENSE), "--calib", str(FIXTURES / "digits_calib.npz"), "--steps", "2", "--bench-rounds",
                 "0", "--target-macs", "0.5", "--max-layer-ratio", "0.75", "-o", str(out), "--report", str(report),
                 "-q"]) == 0
    got = json.loads(report.read_text())
    assert [s["step"] for s in got["stepwise"]["trail"]] == [1, 2]
    assert got["after"]["macs"] / got["before"]["macs"] <= 0.505
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
