"""Fine-tuning wired into prune, the finetune command and the FineTune pass."""

from __future__ import annotations

import onnx
import pytest

from conftest import FIXTURES
from onnxprune.cli.main import main
from onnxprune.load.data import load_npz
from onnxprune.load.runtime import run_dataset, session

TEST = load_npz(FIXTURES / "digits_test.npz", {"input": 4})


def accuracy(path) -> float:
    return float((run_dataset(session(onnx.load(str(path))), TEST)[0].argmax(1) == TEST.labels).mean())


def test_half_macs_distilled_without_labels_is_within_half_a_point(tmp_path, capsys):
    """Issue 5's bar: half the MACs, at most 3 epochs of label-free distillation, within 0.5 point."""
    out, dense = tmp_path / "p.onnx", FIXTURES / "digits_cnn.onnx"
    code = main(["prune", str(dense), "-o", str(out), "--target-macs", "0.5", "--calib", str(FIXTURES / "digits_calib.npz"),
                 "--train-data", str(FIXTURES / "digits_train.npz"), "--criterion", "activation", "--scope", "global",
                 "--recover", "lstsq", "--round-to", "1", "--finetune", "3", "--bench-rounds", "0", "-q"])
    assert code == 0
    assert accuracy(out) >= accuracy(dense) - 0.005


def test_finetune_command_improves_a_pruned_model(tmp_path, capsys):
    pruned, trained = tmp_path / "p.onnx", tmp_path / "t.onnx"
    assert main(["prune", str(FIXTURES / "digits_cnn.onnx"), "-o", str(pruned), "--ratio", "0.5", "--round-to", "1",
                 "--bench-rounds", "0", "-q"]) == 0
    assert main(["finetune", str(pruned), "--data", str(FIXTURES / "digits_train.npz"), "--labels", "--epochs", "2",
                 "--lr", "3e-3", "-o", str(trained), "-q"]) == 0
    assert accuracy(trained) > accuracy(pruned) + 0.3
    assert [list(i.dims) for i in onnx.load(str(trained)).graph.initializer] == \
        [list(i.dims) for i in onnx.load(str(pruned)).graph.initializer]


def test_finetune_command_needs_a_teacher_or_labels(tmp_path, capsys):
    code = main(["finetune", str(FIXTURES / "digits_cnn.onnx"), "--data", str(FIXTURES / "digits_train.npz"),
                 "-o", str(tmp_path / "o.onnx")])
    assert code == 2 and "--teacher" in capsys.readouterr().err


def test_finetune_pass_in_a_pipeline():
    from onnxprune.passes import ChannelPruning, FineTune, PassContext, Pipeline
    dense = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    context = PassContext(dense=dense, calib=str(FIXTURES / "digits_calib.npz"), data=str(FIXTURES / "digits_test.npz"),
                          bench_rounds=0)
    pipeline = Pipeline([ChannelPruning(0.5, round_to=1), FineTune(epochs=2, train=str(FIXTURES / "digits_train.npz"))])
    result = pipeline.run(dense, context)
    assert "finetune" in str(result.report)
    assert result.report["fidelity"]["accuracy_pruned"] > 0.5
