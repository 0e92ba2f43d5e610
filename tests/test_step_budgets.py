"""--steps N splits the fine-tuning budget evenly, the remainder to the last steps (iterative.step_budgets).
A back-loaded split (half to the last step: 1 + 1 + 3 of 5) was measured against it in session 16 and
not adopted: the digits CNN level, PP-OCR cls 3 lines of 400 worse, captcha_crnn 3 of 100 better
(docs/benchmarks.md, "One-shot vs `--steps 3` with today's defaults")."""

from onnxprune.iterative import step_budgets
from onnxprune.options import FinetuneOptions


def test_epochs_split_evenly_with_the_remainder_to_the_last_steps():
    assert [b.epochs for b in step_budgets(FinetuneOptions(epochs=5), 3)] == [1, 2, 2]
    assert [b.epochs for b in step_budgets(FinetuneOptions(epochs=6), 3)] == [2, 2, 2]
    assert [b.epochs for b in step_budgets(FinetuneOptions(epochs=1), 2)] == [0, 1]


def test_minutes_split_evenly_and_each_step_has_its_own_checkpoint():
    budgets = step_budgets(FinetuneOptions(minutes=6.0, checkpoint="out.onnx.ckpt"), 3)
    assert [b.minutes for b in budgets] == [2.0, 2.0, 2.0]
    assert [b.checkpoint for b in budgets] == [f"out.onnx.ckpt.step{k}" for k in range(3)]
