"""tools/replay_guard.py: the epoch each guard rule keeps on a stored history."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import replay_guard  # noqa: E402

# epoch 0 fitted to the guard samples (guard KL 0.01, held-out 0.30); training lowers the held-out KL
ROW = {"val_loss": [0.30, 0.25, 0.20], "guard_loss": [0.01, 0.05, 0.04], "guard_agreement": [1.0, 1.0, 1.0]}


def test_rules_differ_where_the_start_is_fitted_to_the_guard_samples():
    history = replay_guard.entries(ROW, loss_only=False, guard_samples=32)
    assert replay_guard.kept(history, "none") == 2
    assert replay_guard.kept(history, "strict") == replay_guard.kept(history, "wave17") == 0  # guard KL 0.01 -> 0.04
    assert replay_guard.kept(history, "today") == 2  # 0.04 above epoch 0's but below its own held-out 0.20
    assert replay_guard.kept(history, "debiased") == 2  # 0.04 <= max(0.01, 0.30)
    near = replay_guard.entries({**ROW, "guard_loss": [0.100, 0.102, 0.105]}, loss_only=False, guard_samples=32)
    assert replay_guard.kept(near, "strict") == 0 and replay_guard.kept(near, "wave17") == 1  # 0.102 within 1/32
    drift = replay_guard.entries({**ROW, "guard_loss": [0.01, 0.30, 0.25]}, loss_only=False, guard_samples=32)
    assert replay_guard.kept(drift, "today") == 0  # the user's samples now fit worse than the training inputs


def test_agreement_counts_unless_the_model_is_judged_by_the_loss_alone():
    row = {**ROW, "guard_loss": [0.05, 0.04, 0.03], "guard_agreement": [1.0, 0.9, 0.9]}
    assert replay_guard.kept(replay_guard.entries(row, False, 32), "today") == 0  # 3 of 32 flipped
    assert replay_guard.kept(replay_guard.entries(row, True, 32), "today") == 2
