"""Keeping the epoch of best held-out top-1 agreement with the teacher (TrainSettings.select="agreement"):
a CTC recognizer's greedy decode reads the top class per position, which the KL can improve without."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset
from onnxprune.recover.finetune import finetune
from onnxprune.recover.trainloop import score
from test_balanced_distill import W1, W2, X, toy


def test_the_kept_epoch_is_the_one_of_best_agreement():
    data = Dataset({"x": X[:, None]})
    result = finetune(toy(W1[:, :4], W2[:4]), data, 3, teacher=toy(W1, W2), lr=3e-2, batch_size=32,
                      progress=False, threads=1, select="agreement")
    agreement = [h["val_agreement"] for h in result.history]
    assert all(0.0 <= a <= 1.0 for a in agreement)
    assert agreement[result.best_epoch] == max(agreement)


def test_agreement_ranks_first_and_the_loss_breaks_ties():
    assert score({"val_loss": 5.0, "val_agreement": 0.9}, False, True) > score({"val_loss": 0.1, "val_agreement": 0.8}, False, True)
    assert score({"val_loss": 0.2, "val_agreement": 0.9}, False, True) > score({"val_loss": 0.3, "val_agreement": 0.9}, False, True)
    assert score({"val_loss": 0.2, "val_agreement": 0.9}, False) == -0.2  # the default: fidelity


def test_an_unknown_selection_is_bad_input():
    with pytest.raises(BadInputError, match="select"):
        finetune(toy(W1, W2), Dataset({"x": X[:8, None]}), 1, teacher=toy(W1, W2), select="accuracy", progress=False)


def test_the_whole_sample_agreement_is_recorded_and_never_above_the_per_position_one():
    from onnxprune.recover.trainloop import evaluate_epoch

    class Fixed:  # a "student" whose output differs from the target at known positions
        loss_kind = "distill"

    target = np.zeros((4, 3, 5), np.float32)
    target[..., 0] = 1.0
    out = target.copy()
    out[1, 2] = [0, 1, 0, 0, 0]  # sample 1 differs at one of its 3 positions
    data = Dataset({"x": np.zeros((4, 1, 2), np.float32)})
    entry = evaluate_epoch(lambda feeds: out, data, target, Fixed(), 4, True,
                           {"temperature": 1.0, "distill": "kl", "label_smoothing": 0.0, "balance": None})
    assert entry["val_agreement"] == pytest.approx(11 / 12) and entry["val_exact"] == pytest.approx(3 / 4)
