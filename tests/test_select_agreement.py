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
