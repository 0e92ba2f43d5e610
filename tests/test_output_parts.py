"""Output parts of equal weight for fisher (score/output_parts.py): rows of one output in different units (a
detector's pixel boxes and its probabilities) or two graph outputs must not let one of them decide the
ranking; a model of one part scores as before; the pruned model runs in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import prune
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.load.runtime import session
from onnxprune.score import fisher as fisher_module
from onnxprune.score.output_parts import part_weights, parts
from onnxprune.score.criteria import score

P = 10  # positions ("anchors")


def _head(split: bool, seed: int = 0) -> onnx.ModelProto:
    """x [1, 6, P] -> Conv 1x1 -> Relu -> h [1, 12, P]; hidden channels 0-5 drive 4 box rows (pixels: a
    fixed per-position anchor offset of up to 300 plus a few pixels that depend on the data), 6-11 drive 2
    class rows (sigmoid probabilities near 3e-4, like a detector's classes on data without objects). Boxes and classes concatenated along axis 1 into one
    output [1, 6, P] (a YOLO head), or two outputs when `split`."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((12, 6, 1)).astype(np.float32)
    w_box = np.zeros((4, 12, 1), np.float32)
    w_box[:, :6, 0] = 3 * rng.standard_normal((4, 6))
    w_cls = np.zeros((2, 12, 1), np.float32)
    w_cls[:, 6:, 0] = rng.standard_normal((2, 6))
    anchors = np.tile(np.linspace(0, 300, P, dtype=np.float32), (1, 4, 1))
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (w_box, "wb"), (w_cls, "wc"), (anchors, "anchors"), (np.full(2, -8, np.float32), "bc"))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["z"]), helper.make_node("Relu", ["z"], ["h"]),
             helper.make_node("Conv", ["h", "wb"], ["d"]), helper.make_node("Add", ["d", "anchors"], ["box"]),
             helper.make_node("Conv", ["h", "wc", "bc"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["cls"])]
    if split:
        outs = [helper.make_tensor_value_info("box", TensorProto.FLOAT, [1, 4, P]),
                helper.make_tensor_value_info("cls", TensorProto.FLOAT, [1, 2, P])]
    else:
        nodes.append(helper.make_node("Concat", ["box", "cls"], ["y"], axis=1))
        outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, P])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, P])],
                              outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _data(n: int = 12) -> Dataset:
    return Dataset({"x": np.random.default_rng(1).standard_normal((n, 1, 6, P)).astype(np.float32)})


def _shares(model: onnx.ModelProto, monkeypatch, balance: bool) -> float:
    """The box channels' (0-5) share of the summed fisher (or fisher_parts) scores of the hidden group."""
    monkeypatch.setattr(fisher_module, "_LAST", fisher_module.LastModel())
    dep = build_dependency(ModelGraph(model, {"x": (1, 6, P)}))
    s = score(dep, "fisher_parts" if balance else "fisher", data=_data())
    grp = next(g for g in dep.groups if g.size == 12)
    s = s[grp.channels]
    return float(s[:6].sum() / s.sum())


def test_parts_split_rows_by_scale():
    found = parts({"y": np.array([90.0, 88.0, 40.0, 45.0, 1e-4, 3e-3, 5e-3]), "z": np.array([1.0, 2.0])})
    assert [(n, list(r)) for n, r in found] == [("y", [4, 5, 6]), ("y", [0, 1, 2, 3]), ("z", [0, 1])]
    # constant rows (at fisher's floor) join the smallest part; a steady spread of scales is one part
    found = parts({"p": np.array([0.3, 1e-6 * 0.3, 2e-2, 1e-3, 5e-5, 2e-6])}, floor=1e-6)
    assert [(n, list(r)) for n, r in found] == [("p", [0, 1, 2, 3, 4, 5])]
    found = parts({"y": np.array([90.0, 9e-5, 1e-3, 40.0])}, floor=1e-6)
    assert [list(r) for _, r in found] == [[1, 2], [0, 3]]


def test_one_part_weighs_one():
    assert list(part_weights([("y", np.arange(3))], [np.array([5.0, 1e9])], np.array([True, True]))) == [1.0]


def test_part_weights_equalize_the_totals_over_free_channels():
    found = [("y", np.array([0, 1])), ("y", np.array([2])), ("z", np.array([0]))]
    damage = [np.array([1e2, 0.0, 7e9]), np.array([1e5, 9e5, 0.0]), np.array([0.0, 0.0, 0.0])]
    free = np.array([True, True, False])  # channel 2 is frozen: its damage does not count
    w = part_weights(found, damage, free)
    assert np.isclose(w[0] * 1e2, w[1] * 1e6) and w[2] == 1.0  # a part nothing removable moves keeps 1


def test_pixel_rows_with_anchor_offsets_do_not_drop_out_of_the_ranking(monkeypatch):
    model = _head(split=False)
    before, after = _shares(model, monkeypatch, False), _shares(model, monkeypatch, True)
    assert before < 0.05  # the anchors' spread hides the box rows: the class rows decide alone
    assert 0.2 < after < 0.8  # each part weighs alike


def test_one_part_scores_exactly_as_fisher(monkeypatch):
    model = _head(split=False)
    monkeypatch.setattr(fisher_module, "_LAST", fisher_module.LastModel())
    data = _data()
    # only the class rows as output: one part, the same probes, the same scores
    one = onnx.helper.make_model(model.graph, opset_imports=model.opset_import, ir_version=8)
    del one.graph.output[:]
    one.graph.output.extend([helper.make_tensor_value_info("cls", TensorProto.FLOAT, [1, 2, P])])
    dep = build_dependency(ModelGraph(one, {"x": (1, 6, P)}))
    assert np.array_equal(score(dep, "fisher", data=data), score(dep, "fisher_parts", data=data))


def test_two_outputs_weigh_alike(monkeypatch):
    model = _head(split=True)
    assert 0.2 < _shares(model, monkeypatch, True) < 0.8


def test_pruned_head_runs_with_both_parts_kept(tmp_path):
    model = _head(split=False)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=_data().inputs["x"][:, 0])
    res = prune(model, ratio=0.5, calib=str(calib), input_shapes={"x": (1, 6, P)}, bench_rounds=0, round_to=1,
                criterion="fisher_parts")
    x = _data(4).inputs["x"][0]
    dense, = session(model).run(None, {"x": x})
    pruned, = session(res.model).run(None, {"x": x})
    assert pruned.shape == dense.shape == (1, 6, P) and np.isfinite(pruned).all()
    w = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    assert w["w1"].shape[0] < 12 and (w["wb"] != 0).any() and (w["wc"] != 0).any()  # both parts still read h
    assert res.report["options"]["criterion"] == "fisher_parts" and res.report["options"]["max_layer_ratio"] == 0.5
