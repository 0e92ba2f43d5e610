"""The default learning rate (recover/lrfind.py): a range test from the starting weights that leaves
them, the optimizer state and the run's batches untouched, and picks a rate from its grid."""

from __future__ import annotations

import numpy as np
import onnx

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.load.data import Dataset, load_npz
from onnxprune.recover.finetune import finetune
from onnxprune.recover.lrfind import LR_GRID, pick

DENSE = FIXTURES / "digits_cnn.onnx"
TRAIN = load_npz(FIXTURES / "digits_train.npz", {"input": 4})
DATA = Dataset({"input": TRAIN.inputs["input"][:256]})


def _pruned() -> onnx.ModelProto:
    return prune(str(DENSE), target_macs=0.5, calib=str(FIXTURES / "digits_calib.npz"), round_to=1, criterion="l2",
                 scope="local", recover="none", bench_rounds=0).model


def test_pick_prefers_the_largest_rate_near_the_lowest_loss_and_refuses_rates_that_do_not_help():
    assert pick({1e-3: 0.50, 3e-4: 0.100, 1e-4: 0.101, 3e-5: 0.2}, base=0.3) == 3e-4  # 1e-4 within 2%: larger wins
    assert pick({1e-3: float("nan"), 3e-4: 0.2, 1e-4: 0.1, 3e-5: 0.15}, base=0.3) == 3e-4  # 1e-4 wins, one notch up
    assert pick({1e-3: 0.5, 3e-4: 0.4, 1e-4: 0.35, 3e-5: 0.31}, base=0.3) == 3e-5  # nothing beats the start
    assert pick({1e-3: float("nan"), 3e-4: float("inf")}, base=0.3) == 3e-4


def test_pick_never_takes_the_largest_rate_tried():
    # PP-OCR cls's range test: 1e-3 lowest by 6% after 4 steps, 3e-4 the better rate over 5 epochs
    cls = {1e-3: 0.0938, 3e-4: 0.0997, 1e-4: 0.1107, 3e-5: 0.1337}
    assert pick(cls, base=0.1288) == 3e-4
    assert pick({1e-3: 0.100, 3e-4: 0.101, 1e-4: 0.2, 3e-5: 0.2}, base=0.3) == 3e-4  # within 2% of it too
    assert pick({1e-3: 0.100, 3e-4: float("nan"), 1e-4: 0.2}, base=0.3) == 1e-4  # the next finite one
    assert pick({1e-3: 0.1}, base=0.3) == 1e-3  # a grid of one rate has nothing below


def test_pick_moves_a_smaller_winner_one_notch_up_but_never_to_the_largest_rate():
    # PP-OCR cls from a good pruned start: 3e-5 lowest after 4 steps, 1e-4 the better rate over 5 epochs
    cls = {1e-3: 0.4325, 3e-4: 0.2005, 1e-4: 0.2062, 3e-5: 0.1775}
    assert pick(cls, base=0.2009) == 1e-4
    assert pick({1e-3: 0.5, 3e-4: 0.1, 1e-4: 0.2, 3e-5: 0.3}, base=0.4) == 3e-4  # up would be the largest
    assert pick({1e-3: 0.5, 3e-4: float("nan"), 1e-4: 0.2, 3e-5: 0.1}, base=0.4) == 1e-4  # skips a diverged rate
    assert pick({3e-4: 0.2, 1e-4: 0.1}, base=0.4) == 1e-4  # two rates: the higher is the largest


def test_a_chosen_rate_trains_exactly_as_the_same_rate_given():
    model = _pruned()
    chosen = finetune(model, DATA, 1, teacher=str(DENSE), progress=False, threads=1, batch_size=32)
    assert chosen.lr in LR_GRID
    trials = chosen.history[0]["lr_trials"]
    assert set(trials) == {f"{lr:g}" for lr in LR_GRID} and all(np.isfinite(v) for v in trials.values())
    given = finetune(model, DATA, 1, teacher=str(DENSE), progress=False, threads=1, batch_size=32, lr=chosen.lr)
    assert "lr_trials" not in given.history[0]
    a = {i.name: onnx.numpy_helper.to_array(i) for i in chosen.model.graph.initializer}
    b = {i.name: onnx.numpy_helper.to_array(i) for i in given.model.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # the range test left no trace
    assert chosen.history[1:] == given.history[1:]


class _Params:
    """The least find_lr reads of FlatParams: a snapshot and its restore."""

    def snapshot(self):
        return None

    def restore(self, _):
        pass


class _Opt:
    def __init__(self):
        self.rates: list[float] = []

    def step(self, lr: float) -> None:
        self.rates.append(lr)


def _rates_tried(warmup: bool) -> list[float]:
    from onnxprune.recover.lrfind import LR_STEPS, find_lr
    opt = _Opt()
    find_lr(lambda feeds, target: (1.0, None), opt, _Params(), lambda: iter([(None, None, None)] * 10),
            lambda: 1.0, warmup=warmup)
    assert len(opt.rates) == LR_STEPS * len(LR_GRID)
    return opt.rates[:LR_STEPS]


def test_the_range_test_ramps_each_rate_up_only_with_warmup():
    first = LR_GRID[0]
    assert _rates_tried(False) == [first] * 4
    assert np.allclose(_rates_tried(True), [first / 4, first / 2, 3 * first / 4, first])


def test_lr_test_warmup_reaches_the_range_test():
    model = _pruned()
    plain, ramped = (finetune(model, DATA, 1, teacher=str(DENSE), progress=False, threads=1, batch_size=32,
                              lr_test_warmup=w, minutes=1e-4) for w in (False, True))
    a, b = plain.history[0]["lr_trials"], ramped.history[0]["lr_trials"]
    assert a.keys() == b.keys() and a != b  # smaller first steps reach other losses


def test_a_rate_a_few_percent_behind_on_four_steps_still_wins():
    """PP-OCRv4 rec's stored range test (docs/results/finetune_goal_s17_rec.jsonl): 1e-4 ends 3.3% above 3e-5
    after four steps; within 5% it wins and moves up to 3e-4, whose 5 epochs reach 0.94% CER against 1e-4's 1.25."""
    rec = {1e-3: 1.5289, 3e-4: 0.8350, 1e-4: 0.4073, 3e-5: 0.3941}
    assert pick(rec, base=0.4753) == 3e-4
    ddddocr = {1e-3: 1.2708, 3e-4: 0.9658, 1e-4: 0.7836, 3e-5: 0.7176}  # finetune_warmup_s17.jsonl
    assert pick(ddddocr, base=0.6740) == 3e-5  # no rate beats its start: the smallest, as before
