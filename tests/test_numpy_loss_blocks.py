"""The validation loss (numpy_loss) of class scores is summed a row block at a time: the same value as the
whole-batch formula, with a transient bounded by the block, not the batch (PP-OCRv4 rec's 32 x 40 x 6625
scores took 390 MB in float64 temporaries, the peak of fine-tuning at batch 32)."""

import tracemalloc

import numpy as np
import pytest

from onnxprune.autodiff import losses
from onnxprune.autodiff.losses import numpy_loss


def _whole_kl(z, target, t):
    z = z.reshape(-1, z.shape[-1]).astype(np.float64) / t
    zt = target.reshape(-1, z.shape[-1]).astype(np.float64) / t
    log_s = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    log_t = zt - np.log(np.exp(zt - zt.max(1, keepdims=True)).sum(1, keepdims=True)) - zt.max(1, keepdims=True)
    return t * t * np.sum(np.exp(log_t) * (log_t - log_s)) / len(z)


def _whole_ce(z, labels, smoothing):
    z = z.reshape(-1, z.shape[-1]).astype(np.float64)
    m = z.max(1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    hot = np.full(z.shape, smoothing / z.shape[1])
    hot[np.arange(len(z)), labels.reshape(-1)] += 1 - smoothing
    return -np.sum(hot * log_p) / len(z)


@pytest.mark.parametrize("block", [7 * 50, 1 << 20])  # 7 rows a block (a ragged last one), and one block
def test_blocks_give_the_whole_batch_loss(monkeypatch, block):
    monkeypatch.setattr(losses, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(0)
    z, t = rng.standard_normal((4, 10, 50)).astype(np.float32), 3 * rng.standard_normal((4, 10, 50)).astype(np.float32)
    assert numpy_loss("distill", z, t, temperature=2.0) == pytest.approx(_whole_kl(z, t, 2.0), rel=1e-12)
    labels = rng.integers(0, 50, (4, 10))
    assert numpy_loss("cross_entropy", z, labels, label_smoothing=0.1) == pytest.approx(_whole_ce(z, labels, 0.1), rel=1e-12)


def test_kl_transient_is_bounded_by_the_block_not_the_batch():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((16, 40, 6625), dtype=np.float32)  # 17 MB each; float64 temporaries of all: ~190 MB
    t = rng.standard_normal((16, 40, 6625), dtype=np.float32)
    tracemalloc.start()
    try:
        numpy_loss("distill", z, t, temperature=2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"
