"""`--scope blend`: one global ranking by score over the square root of the MACs a channel saves, between
`global` (MACs ignored) and `cost` (score per MAC); the pruned model runs in ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import onnx

from conftest import FIXTURES
from onnxprune.cli.main import main
from onnxprune.couple.dependency import build_dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.runtime import session
from onnxprune.select.mac_costs import mac_costs
from onnxprune.select.plan import select_global

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"


def _dep():
    model = onnx.load(DIGITS)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return build_dependency(ModelGraph(model, {model.graph.input[0].name: tuple(shape)}))


def test_blend_costs_are_the_square_roots_of_the_per_mac_costs():
    dep = _dep()
    full, root = mac_costs(dep), mac_costs(dep, power=0.5)
    assert full.keys() == root.keys() and len(full) > 1
    assert np.allclose([root[g] for g in full], [np.sqrt(full[g]) for g in full])
    assert max(full.values()) / min(full.values()) > 2  # the groups do differ in cost


def test_blend_cuts_the_costliest_group_between_global_and_cost():
    dep = _dep()
    scores = np.random.default_rng(0).uniform(0.5, 1.5, dep.num_channels)  # importance within a factor 3
    costs = mac_costs(dep)
    costliest = max(costs, key=costs.get)
    cut = {}
    for name, weights in (("global", None), ("blend", mac_costs(dep, power=0.5)), ("cost", costs)):
        plan = select_global(dep, scores, 0.3, max_layer_ratio=0.9, channel_costs=weights, normalize=False)
        cut[name] = int(plan.removed[next(g for g in dep.groups if g.id == costliest).channels].sum())
    assert cut["global"] < cut["blend"] < cut["cost"]


def test_blend_from_the_command_line_runs_in_onnx_runtime(tmp_path, capsys):
    out, report = tmp_path / "m.onnx", tmp_path / "r.json"
    code = main(["prune", str(DIGITS), "-o", str(out), "--target-macs", "0.6", "--scope", "blend", "--calib", str(CALIB),
                 "--calib-limit", "16", "--round-to", "1", "--bench-rounds", "0", "--report", str(report), "-q"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(report.read_text())
    assert doc["options"]["scope"] == "blend" and doc["options"]["criterion"] == "fisher_comp_ordered"
    calib = np.load(CALIB)
    x = calib[calib.files[0]][:1].astype(np.float32)
    dense, = session(str(DIGITS)).run(None, {onnx.load(DIGITS).graph.input[0].name: x})
    pruned, = session(str(out)).run(None, {onnx.load(out).graph.input[0].name: x})
    assert pruned.shape == dense.shape and np.isfinite(pruned).all()
    assert doc["after"]["macs"] <= 0.61 * doc["before"]["macs"]
