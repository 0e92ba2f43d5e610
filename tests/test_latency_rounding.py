"""A latency target with no --round-to chooses its width rounding on the latency model (select/rounding.py):
each candidate profiled and allocated, the one keeping the most MACs at the predicted target wins.
No timing is asserted: which roundings are tried, and the choice on given predictions."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from onnxprune import prune
from onnxprune.options import Target, latency_roundings
from onnxprune.select import kernel_block, latency, latency_profile
from onnxprune.select.rounding import NEAR, Rounding, choose


def test_the_default_stays_unless_another_keeps_more_macs_at_the_target():
    block, eight = Rounding(16, 0.50, 0.40), Rounding(8, 0.50, 0.40 * NEAR * 1.05)
    assert choose([block, eight], 0.5, 0.05) == eight
    assert choose([block, Rounding(8, 0.50, 0.40 * 1.005)], 0.5, 0.05) == block  # within NEAR: the default


def test_a_rounding_that_cannot_reach_the_target_loses_whatever_macs_it_keeps():
    shallow = Rounding(16, 0.64, 0.45)  # ShuffleNet's 17-wide groups at 16: too coarse to go deep enough
    assert choose([shallow, Rounding(8, 0.51, 0.31)], 0.5, 0.05).round_to == 8
    assert choose([shallow, Rounding(8, 0.58, 0.31)], 0.5, 0.05).round_to == 8  # neither: the closer one


def test_roundings_tried_are_the_default_then_the_other(monkeypatch):
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 16)
    assert latency_roundings(Target(latency=0.5), [32, 64]) == (16, 8)
    assert latency_roundings(Target(latency=0.5), [17, 34]) == (8, 16)
    assert latency_roundings(Target(macs=0.5), [32, 64]) == (8,)
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 8)  # AVX2: nothing to choose
    assert latency_roundings(Target(latency=0.5), [32, 64]) == (8,)


@pytest.mark.parametrize("given", [None, 4])
def test_a_latency_target_profiles_each_rounding_unless_one_is_given(given, tmp_path, monkeypatch):
    monkeypatch.setattr(kernel_block, "nchwc_block", lambda: 16)
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path))
    profiled = []
    real = latency_profile.build_profiled_model

    def watched(dep, *args, **kwargs):
        profiled.append(kwargs["round_to"])
        return real(dep, *args, **kwargs)

    monkeypatch.setattr("onnxprune.stages.build_profiled_model", watched)
    monkeypatch.setattr(latency, "ATTEMPTS", 1)
    result = prune(str(FIXTURES / "digits_cnn.onnx"), target_latency=0.7, bench_rounds=0, threads=1,
                   **({"round_to": given} if given else {}))
    tried = result.report["plan"]["latency"]["rounding_at_target"]
    if given:
        assert profiled == [given] and set(tried) == {str(given)}
    else:
        assert sorted(profiled) == [8, 16] and set(tried) == {"8", "16"}
    assert result.report["options"]["round_to"] in profiled
