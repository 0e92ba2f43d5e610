"""`--scope auto`, the data-aware default: one global ranking that divides each channel's score by the
MACs it saves at mild targets (as `cost`), ignores them at deep ones (as `global`) and slides between;
the pruned model it chooses runs in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.load.runtime import session
from onnxprune.options import PruneOptions, Target
from onnxprune.select.mac_costs import AUTO_DEEP, AUTO_MILD, auto_power
from onnxprune.stages import choose_plan, prepare

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"


def test_the_power_slides_from_cost_to_global():
    assert auto_power(0.95) == auto_power(AUTO_MILD) == 1.0
    assert auto_power(0.2) == auto_power(AUTO_DEEP) == 0.0
    assert auto_power((AUTO_MILD + AUTO_DEEP) / 2) == pytest.approx(0.5)
    assert all(auto_power(a) >= auto_power(b) for a, b in zip(np.linspace(0.3, 1, 15)[1:], np.linspace(0.3, 1, 15)))


def _removed(scope: str, **target) -> np.ndarray:
    options = PruneOptions(target=Target(**target), criterion="l2", scope=scope, recover="none", round_to=1,
                           max_layer_ratio=0.9, calib_limit=16, bench_rounds=0)
    return choose_plan(prepare(str(DIGITS), options, str(CALIB), None)).removed


@pytest.mark.parametrize("kept, same_as", [(0.85, "cost"), (0.6, "global"), ((AUTO_MILD + AUTO_DEEP) / 2, "blend")])
def test_auto_chooses_what_the_scope_it_stands_for_chooses(kept, same_as):
    # halfway between the ends: a power of one half, which is blend's
    assert np.array_equal(_removed("auto", macs=kept), _removed(same_as, macs=kept))


def test_a_mild_and_a_deep_target_differ_in_where_they_cut():
    # the digits CNN's groups differ in MACs per channel, so per-MAC ranking does move the cut
    assert not np.array_equal(_removed("cost", macs=0.6), _removed("global", macs=0.6))


def test_a_channel_ratio_counts_as_its_rough_macs_share():
    # --ratio 0.1 keeps about 0.81 of the MACs (inputs and outputs both shrink): cost's plan
    assert np.array_equal(_removed("auto", ratio=0.1), _removed("cost", ratio=0.1))
    assert np.array_equal(_removed("auto", ratio=0.4), _removed("global", ratio=0.4))


def test_the_auto_plan_runs(tmp_path):
    from onnxprune.api import prune

    result = prune(str(DIGITS), target_macs=0.7, calib=str(CALIB), calib_limit=16, round_to=1, bench_rounds=0)
    assert result.report["options"]["scope"] == "auto"
    path = tmp_path / "m.onnx"
    onnx.save(result.model, path)
    x = np.load(CALIB)[np.load(CALIB).files[0]][:2].astype(np.float32)
    name = onnx.load(DIGITS).graph.input[0].name
    dense, = session(str(DIGITS)).run(None, {name: x})
    pruned, = session(str(path)).run(None, {name: x})
    assert pruned.shape == dense.shape and np.isfinite(pruned).all()
    assert (dense.argmax(1) == pruned.argmax(1)).mean() >= 0.5
