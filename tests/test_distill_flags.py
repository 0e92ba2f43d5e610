"""`--distill` and `--select` on `onnxprune finetune` and `prune --finetune`: each flag reaches the training
loop and changes what is trained or which epoch is written, not only what is parsed.

The toy (test_balanced_distill.toy) is a two-layer MLP whose output mixes channels of very different scale;
the student has half its hidden units. At lr 3e-2 over 4 epochs its held-out KL is lowest at epoch 3 while
its held-out top-1 agreement with the teacher peaks at epoch 1, so the two selections keep different epochs.
"""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

from onnxprune.cli.main import main
from onnxprune.options import FinetuneOptions
from onnxprune.errors import BadInputError
from test_balanced_distill import W1, W2, X, toy

COMMON = ["--epochs", "4", "--lr", "3e-2", "--batch-size", "32", "--threads", "1"]


@pytest.fixture()
def files(tmp_path):
    student, teacher, data = tmp_path / "student.onnx", tmp_path / "teacher.onnx", tmp_path / "data.npz"
    onnx.save(toy(W1[:, :4], W2[:4]), str(student))
    onnx.save(toy(W1, W2), str(teacher))
    np.savez(data, x=X)
    return student, teacher, data


def _weights(path) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _finetune(files, out, capsys, *flags: str) -> str:
    student, teacher, data = files
    assert main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), "-o", str(out),
                 *COMMON, *flags]) == 0
    return capsys.readouterr().out


def _kept(line: str) -> int:
    return int(re.search(r"kept epoch (\d+)", line).group(1))


def test_select_agreement_writes_another_epoch_than_fidelity(files, tmp_path, capsys):
    by_loss = _finetune(files, tmp_path / "fidelity.onnx", capsys)  # the default
    by_agreement = _finetune(files, tmp_path / "agreement.onnx", capsys, "--select", "agreement")
    assert "(by fidelity)" in by_loss and "(by agreement)" in by_agreement
    assert _kept(by_loss) != _kept(by_agreement)
    a, b = _weights(tmp_path / "fidelity.onnx"), _weights(tmp_path / "agreement.onnx")
    assert not np.allclose(a["w1"], b["w1"])  # a different epoch's weights are written


def test_distill_mse_trains_on_another_loss_than_kl(files, tmp_path, capsys):
    kl = _finetune(files, tmp_path / "kl.onnx", capsys, "--distill", "kl")
    mse = _finetune(files, tmp_path / "mse.onnx", capsys, "--distill", "mse")
    assert "(distill kl)" in kl and "(distill mse)" in mse
    a, b = _weights(tmp_path / "kl.onnx"), _weights(tmp_path / "mse.onnx")
    assert not np.allclose(a["w2"], b["w2"])


def test_prune_finetune_passes_both_flags_to_training(files, tmp_path):
    _, teacher, data = files
    report = tmp_path / "r.json"
    assert main(["prune", str(teacher), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5", "--calib", str(data),
                 "--recover", "none", "--criterion", "l2", "--scope", "local", "--round-to", "1", "--bench-rounds", "0",
                 "--finetune", "3", "--lr", "3e-2", "--batch-size", "32", "--threads", "1", "--distill", "mse",
                 "--select", "agreement", "--report", str(report), "-q"]) == 0
    tune = json.loads(report.read_text())["finetune"]
    assert tune["distill"] == "mse" and tune["select"] == "agreement"
    agreement = [h["val_agreement"] for h in tune["history"]]
    assert agreement[tune["best_epoch"]] == max(agreement)
    assert tune["history"][0]["val_loss"] > 1e3  # squared error on outputs in the hundreds, not a KL


@pytest.mark.parametrize("field,value", [("distill", "l1"), ("select", "accuracy")])
def test_an_unknown_choice_is_bad_input(field, value):
    with pytest.raises(BadInputError, match=f"--{field}"):
        FinetuneOptions(epochs=1, **{field: value})


def test_an_unknown_flag_value_exits_2(files, tmp_path, capsys):
    student, teacher, data = files
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), "-o", str(tmp_path / "o.onnx"),
              "--select", "accuracy"])
    assert exit_.value.code == 2 and not (tmp_path / "o.onnx").exists()


def test_the_summary_line_shows_small_values_not_zero(files, tmp_path, capsys):
    """The printed learning rate of a 1e-4 run (the range test's usual picks are 3e-5 to 1e-3) read 0.0000."""
    student, teacher, data = files
    assert main(["finetune", str(student), "--teacher", str(teacher), "--data", str(data), "-o",
                 str(tmp_path / "out.onnx"), "--epochs", "1", "--lr", "1e-4", "--threads", "1"]) == 0
    lr = float(re.search(r"\blr ([-+0-9.e]+)", capsys.readouterr().out).group(1))
    assert 0 < lr <= 1e-4
