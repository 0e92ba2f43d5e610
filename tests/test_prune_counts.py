"""Ratio 0.5 on fixtures: exact widths and parameter counts, computed from the architectures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from onnxprune.api import prune
from onnxprune.graph.cost import count_params
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.select.plan import rounded_keep


def conv(cin, cout, k, groups=1):
    return cout * (cin // groups) * k * k + cout


def linear(i, o):
    return i * o + o


def params_after(name, **kw):
    result = prune(FIXTURES / name, 0.5, round_to=1, bench_rounds=0, **kw)
    return count_params(ModelGraph(result.model)), result


EXPECTED = {
    # Conv(3->16)-Conv(16->32,s2)-Conv(32->32)-GAP-Linear(32->10), BN folded: widths halve
    "chain.onnx": conv(3, 8, 3) + conv(8, 16, 3) + conv(16, 16, 3) + linear(16, 10),
    # Linear(64->128)-ReLU-Linear(128->64)-GELU-Linear(64->10)
    "mlp.onnx": linear(64, 64) + linear(64, 32) + linear(32, 10),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ratio_half_exact_counts(name):
    got, result = params_after(name)
    assert got == EXPECTED[name]
    assert result.report["after"]["params"] == got
    assert result.report["fidelity"]["cosine"] <= 1.0


def test_digits_cnn_widths():
    """Every prunable conv keeps exactly half its filters; the classifier keeps its 10 outputs."""
    result = prune(FIXTURES / "digits_cnn.onnx", 0.5, round_to=1, bench_rounds=0)
    dense = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    dense_w = {i.name: i.dims for i in dense.graph.initializer}
    pruned_w = {i.name: i.dims for i in result.model.graph.initializer}
    for name, dims in dense_w.items():
        if len(dims) == 4:  # conv weights [out, in, k, k]
            out_expected = dims[0] // 2
            in_expected = dims[1] if dims[1] == 1 else dims[1] // 2
            assert list(pruned_w[name]) == [out_expected, in_expected, dims[2], dims[3]]
        if len(dims) == 2:  # the Gemm keeps its 10 classes, loses half its inputs
            assert 10 in pruned_w[name] and np.prod(pruned_w[name]) == np.prod(dims) // 2


@pytest.mark.parametrize("name", ["residual.onnx", "concat.onnx", "mobile_se.onnx", "flatten_fc.onnx",
                                  "grouped.onnx", "bn_kept.onnx"])
def test_ratio_half_counts_match_groups(name):
    """Parameter count after pruning equals the count implied by the kept channels of each slot."""
    got, result = params_after(name)
    dep = result.plan.dep
    kept = dep.kept_indices(result.plan.removed)
    expected = 0
    for tensor, value in dep.graph.constants.items():
        if not np.issubdtype(value.dtype, np.floating) or value.ndim == 0:
            continue
        shape = list(value.shape)
        for slot, idx in kept.items():
            if slot.tensor == tensor:
                shape[slot.axis] = len(idx)
        expected += int(np.prod(shape))
    assert got == expected
    assert got < count_params(dep.graph)
    # and each group kept exactly round(n/2) channels unless frozen
    for grp, (k, total) in zip(dep.groups, result.plan.kept_per_group):
        assert k == (total if grp.prunable == 0 else rounded_keep(total, 0.5, 1))


@pytest.mark.parametrize("total,ratio,step,expected", [
    (64, 0.3, 8, 48), (64, 0.5, 16, 32), (10, 0.5, 16, 5), (3, 0.9, 1, 1), (32, 0.3, 8, 24), (100, 0.3, 1, 70)])
def test_rounded_keep(total, ratio, step, expected):
    assert rounded_keep(total, ratio, step) == expected
