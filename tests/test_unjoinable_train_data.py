"""Training data given apart from the calibration data (--train-data) is probed like it: a model that
declares a dynamic batch but bakes batch 1 into a Reshape trains one sample per step. The probe ran only
on --calib, so fine-tuning khmersm on --train-data crashed in ONNX Runtime at batch 32 (exit 3)."""

from __future__ import annotations

import numpy as np
import pytest

import onnxprune
from conftest import baked_batch_model


def _samples(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 6)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("samples", [16, 64])  # 64: enough to hold some out, which kept the flag only since
def test_finetune_on_separate_training_data_feeds_one_sample_at_a_time(samples):
    result = onnxprune.prune(baked_batch_model(), calib=_samples(12, 1), train_data=_samples(samples, 2), ratio=0.5,
                             finetune_epochs=1, bench_rounds=0)
    assert result.report["finetune"]["epochs"] == 1
    assert np.isfinite(result.report["fidelity"]["cosine"])
