"""The faster big-graph paths give what the plain ones gave: channel groups and kept indices built in
whole-array passes, batched finiteness checks, parked models written without onnx.save_model, the
memoized float test of count_params (issue 11's 100,000-node graphs). Fixtures are generated chains
(tools/make_chain.py) and small hand-made models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.check import finite
from onnxprune.couple import dependency
from onnxprune.couple.dependency import build_dependency
from onnxprune.couple.vocabulary import Link, Slot
from onnxprune.errors import ValidationError
from onnxprune.graph import cost
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.parked import Parked

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from make_chain import chain_model  # noqa: E402


@pytest.fixture(scope="module")
def chain_dep():
    return build_dependency(ModelGraph(chain_model(200)))


def test_kept_indices_match_the_per_slot_rule(chain_dep):
    rng = np.random.default_rng(0)
    cases = [rng.random(chain_dep.num_channels) < 0.3, np.zeros(chain_dep.num_channels, bool),
             np.ones(chain_dep.num_channels, bool)]
    for removed in cases:
        want = {}
        for slot in chain_dep.slots:
            gone = removed[chain_dep.elements(slot)]
            if gone.any():
                want[slot] = np.flatnonzero(~gone)
        got = chain_dep.kept_indices(removed)
        assert list(got) == list(want)  # same slots, same order
        for slot, idx in want.items():
            assert got[slot].dtype == idx.dtype and np.array_equal(got[slot], idx)
    assert len(chain_dep.kept_indices(cases[2])) == len(chain_dep.slots)  # every slot emptied
    assert all(len(v) == 0 for v in chain_dep.kept_indices(cases[2]).values())


def test_link_element_ids_and_sorted_keys_match_the_per_link_forms():
    index = {Slot("a", 1): 0, Slot("b", 0): 1, Slot("c", 2): 2}
    offsets = np.array([0, 4, 7, 12], np.int64)
    links = [Link(Slot("a", 1), Slot("b", 0), np.arange(3), np.array([2, 0, 1])),
             Link(Slot("c", 2), Slot("a", 1), np.array([4, 0]), np.array([3, 3]))]
    for side in ("a", "b"):
        want = np.concatenate([offsets[index[getattr(l, side)]] + getattr(l, "i" + side) for l in links])
        got = dependency._element_ids(links, side, index, offsets)
        assert got.dtype == np.int64 and np.array_equal(got, want)
    assert dependency._element_ids([], "a", index, offsets).shape == (0,)
    values = np.random.default_rng(1).integers(0, 50, 400)
    assert np.array_equal(dependency._sorted_unique(values), np.unique(values))
    assert dependency._sorted_unique(np.zeros(0, np.int64)).shape == (0,)


def test_slots_hash_compare_sort_and_print_as_before():
    a, b = Slot("x", 1), Slot("x", 0)
    assert a == Slot("x", 1) and hash(a) == hash(Slot("x", 1)) and a != b
    assert sorted([a, b, Slot("w", 3)]) == [Slot("w", 3), b, a]  # by tensor, then axis
    assert str(a) == "x[axis 1]" and repr(a) == "Slot(tensor='x', axis=1)"
    assert (a.tensor, a.axis) == ("x", 1)


def _model(tensors: list[onnx.TensorProto]) -> onnx.ModelProto:
    """A graph that only holds `tensors` (as initializers and one Constant node's value)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    node = helper.make_node("Constant", [], ["k"], value=tensors[-1])
    ident = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node, ident], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              initializer=tensors[:-1])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tensors(bad: dict[str, float] | None = None) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(2)
    arrays = {f"f{i}": rng.standard_normal((3, 4)).astype(np.float32) for i in range(20)}
    arrays.update(d0=rng.standard_normal(5), h0=rng.standard_normal(6).astype(np.float16),
                  big=rng.standard_normal(finite.SMALL_ELEMENTS + 1).astype(np.float32),
                  k=rng.standard_normal(3).astype(np.float32))
    for name, value in (bad or {}).items():
        if name in arrays:
            arrays[name].flat[1] = value
    tensors = [numpy_helper.from_array(v, n) for n, v in arrays.items()]
    listed = helper.make_tensor("listed", TensorProto.FLOAT, [2], [1.0, float((bad or {}).get("listed", 2.0))])
    return tensors[:-1] + [listed, tensors[-1]]  # float_data, not raw: judged alone


@pytest.mark.parametrize("bad", [None, {"f7": np.nan}, {"f19": np.inf}, {"d0": 1e300}, {"h0": -np.inf},
                                 {"big": np.nan}, {"k": np.nan}, {"listed": np.inf}])
def test_batched_finiteness_judges_as_each_tensor_alone(bad):
    model = _model(_tensors(bad))
    alone = [t.name for t in finite._float_tensors(model) if finite._non_finite(t)]
    assert finite._all_finite(model) == (not alone)
    assert bool(alone) == (bad is not None)  # a double of 1e300 is infinite as float32, as before
    if alone:
        with pytest.raises(ValidationError, match=f"tensor '{alone[0]}'"):
            finite.check_finite(model)
    else:
        finite.check_finite(model)


def test_batches_flush_at_the_byte_limit(monkeypatch):
    monkeypatch.setattr(finite, "BATCH_BYTES", 64)  # one batch per tensor or two
    assert finite._all_finite(_model(_tensors()))
    assert not finite._all_finite(_model(_tensors({"f3": np.nan})))


def test_parked_file_is_what_onnx_save_model_writes(tmp_path):
    model = chain_model(40)
    onnx.save_model(model, str(tmp_path / "saved.onnx"))
    parked = Parked(model)
    assert Path(parked.path).read_bytes() == (tmp_path / "saved.onnx").read_bytes()
    assert parked.size == (tmp_path / "saved.onnx").stat().st_size
    assert parked.load().SerializeToString() == model.SerializeToString()


def test_floating_test_is_numpy_issubdtype_for_every_onnx_type():
    for data_type in TensorProto.DataType.values():
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(data_type))
        except Exception:  # noqa: BLE001  (UNDEFINED, STRING-like types numpy cannot name)
            continue
        assert cost.is_floating(dtype) == bool(np.issubdtype(dtype, np.floating)), dtype
