"""Pruning schedules: exact sparsity per layer, Erdős–Rényi densities, prune = regrow, masks after every
step, determinism, re-initialisation, the train command and the passes, and one real-data result."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import FIXTURES
from onnxprune.autodiff import read_weights
from onnxprune.autodiff.optim import Optimizer
from onnxprune.cli.main import main
from onnxprune.load.data import load_npz
from onnxprune.errors import BadInputError
from onnxprune.load.runtime import session
from onnxprune.recover.schedules import SCHEDULES, Layer, ScheduleOptions, TrainConfig, TrainingRun, er_densities, er_scale, find_layers, prune_and_regrow, reinitialise, train_schedule
from onnxprune.recover.schedules.masks import keep_count, magnitude_mask
from onnxprune.apply.sparsity import apply_masks

SPARSITY = {"conv": 0.5, "linear": 0.8}
FAST = TrainConfig(lr=3e-3, threads=1, seed=0)


@pytest.fixture(scope="module")
def cnn():
    return onnx.load(str(FIXTURES / "digits_cnn.onnx"))


@pytest.fixture(scope="module")
def mlp():
    return onnx.load(str(FIXTURES / "digits_mlp_init.onnx"))


@pytest.fixture(scope="module")
def train():
    return load_npz(FIXTURES / "digits_train.npz", {"input": 4})


@pytest.fixture(scope="module")
def test_set():
    return np.load(FIXTURES / "digits_test.npz")


def _accuracy(model, test_set) -> float:
    logits = session(model, 1).run(None, {"input": test_set["input"]})[0]
    return float((logits.argmax(1) == test_set["labels"]).mean())


def _target_keep(result, model) -> dict[str, int]:
    """What each layer must keep at the end: its kind's share, or (SET) its Erdős–Rényi share."""
    layers = find_layers(model)
    if result.schedule == "set":
        densities, _ = er_densities(layers, SPARSITY)
        return {layer.name: keep_count(layer.size, densities[layer.name]) for layer in layers}
    return {layer.name: keep_count(layer.size, 1 - SPARSITY[layer.kind]) for layer in layers}


# ---- masks and densities ----------------------------------------------------------------------------

def test_er_densities_follow_the_formula_and_hit_the_target():
    layers = [Layer("a", "linear", (300, 64), 1), Layer("b", "linear", (100, 300), 1),
              Layer("c", "linear", (10, 100), 1)]
    densities, eps = er_densities(layers, {"linear": 0.8})
    for layer in layers:
        n_out, n_in = layer.shape
        if densities[layer.name] < 1.0:  # Mocanu et al.: epsilon (n_in + n_out) / (n_in n_out)
            assert densities[layer.name] == pytest.approx(eps["linear"] * (n_in + n_out) / (n_in * n_out))
    kept = sum(densities[layer.name] * layer.size for layer in layers)
    assert kept == pytest.approx(0.2 * sum(layer.size for layer in layers))
    assert densities["c"] > densities["b"]  # small layers are denser


def test_erk_caps_layers_at_dense_and_keeps_the_kind_total():
    layers = [Layer("stem", "conv", (32, 1, 3, 3), 1), Layer("c2", "conv", (64, 32, 3, 3), 1),
              Layer("c3", "conv", (64, 64, 3, 3), 1), Layer("fc", "linear", (10, 64), 1)]
    densities, eps = er_densities(layers, SPARSITY)
    assert densities["stem"] == 1.0  # epsilon * (32 + 1 + 3 + 3) / 288 would exceed 1
    assert densities["c2"] == pytest.approx(eps["conv"] * er_scale((64, 32, 3, 3)))
    assert er_scale((64, 32, 3, 3)) == pytest.approx((64 + 32 + 3 + 3) / (64 * 32 * 9))
    conv = [layer for layer in layers if layer.kind == "conv"]
    assert sum(densities[c.name] * c.size for c in conv) == pytest.approx(0.5 * sum(c.size for c in conv))
    assert densities["fc"] == pytest.approx(0.2)  # a kind with one layer gets the target itself


def test_prune_and_regrow_is_exact_and_grows_new_connections():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((20, 30)).astype(np.float32)
    mask = np.zeros(weight.shape, bool)
    mask.reshape(-1)[rng.choice(600, 200, replace=False)] = True
    weight[~mask] = 0
    new, change = prune_and_regrow(weight, mask, keep=200, regrow=60, rng=rng)
    assert new.sum() == 200 and change.pruned == change.regrown == 60
    cut = mask & ~new
    assert np.abs(weight[cut]).max() <= np.abs(weight[mask & new]).min()  # the smallest |w| went
    assert not mask.reshape(-1)[change.regrown_index].any()  # grown where there was no connection


def test_reinitialise_is_seeded_kaiming_with_zero_biases(cnn):
    layers = find_layers(cnn)
    a, b, c = (reinitialise(cnn, layers, "kaiming", seed) for seed in (1, 1, 2))
    wa, wb, wc = (read_weights(m, ["conv3.weight", "conv3.bias"]) for m in (a, b, c))
    np.testing.assert_array_equal(wa["conv3.weight"], wb["conv3.weight"])
    assert not np.array_equal(wa["conv3.weight"], wc["conv3.weight"])
    assert wa["conv3.weight"].std() == pytest.approx(np.sqrt(2.0 / (64 * 9)), rel=0.05)
    assert not wa["conv3.bias"].any()
    with pytest.raises(BadInputError, match="unknown initialisation"):
        reinitialise(cnn, layers, "orthogonal")


# ---- the schedules ----------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["pre", "in", "post", "set"])
def test_each_schedule_ends_at_exactly_the_target_sparsity(schedule, cnn, train):
    result = train_schedule(cnn, train.take(192), schedule, ScheduleOptions(epochs=3, sparsity=SPARSITY, train=FAST))
    keep = _target_keep(result, cnn)
    saved = onnx.load_from_string(result.model.SerializeToString())
    values = {i.name: numpy_helper.to_array(i) for i in saved.graph.initializer}
    for name, mask in result.masks.items():
        assert mask.sum() == keep[name], name                 # the topology holds exactly the target
        assert not values[name][~mask].any(), name            # zeros in the saved model
    row = {r["name"]: r for r in result.layers}
    assert all(row[n]["nonzero"] <= keep[n] for n in keep)
    if schedule != "set":
        for layer in find_layers(cnn):
            assert row[layer.name]["sparsity"] >= SPARSITY[layer.kind] - 1.0 / layer.size


def test_in_training_ramps_then_regrows_as_many_as_it_cuts(mlp, train):
    result = train_schedule(mlp, train, "in", ScheduleOptions(epochs=6, ramp=0.4, train=FAST))
    steps = [h for h in result.history if "pruned" in h]
    assert len(steps) == 5 and result.info["ramp_epochs"] == 2
    assert steps[0]["pruned"] > steps[0]["regrown"] > 0         # ramping: more cut than grown
    for h in steps[2:]:                                        # at the target: cut = regrown
        assert h["pruned"] == h["regrown"] > 0


def test_set_regrows_as_many_as_it_cuts_every_epoch(mlp, train):
    result = train_schedule(mlp, train, "set", ScheduleOptions(epochs=4, zeta=0.3, train=FAST))
    steps = [h for h in result.history if "pruned" in h]
    assert len(steps) == 3
    active = sum(int(m.sum()) for m in result.masks.values())
    for h in steps:
        assert h["pruned"] == h["regrown"] == pytest.approx(0.3 * active, abs=len(result.masks))


def test_cosine_zeta_decay_cuts_less_each_epoch(mlp, train):
    result = train_schedule(mlp, train.take(256), "set", ScheduleOptions(epochs=5, zeta_decay="cosine", train=FAST))
    cuts = [h["pruned"] for h in result.history if "pruned" in h]
    active = sum(int(m.sum()) for m in result.masks.values())
    assert cuts[0] == pytest.approx(0.3 * active, abs=2)
    assert cuts == sorted(cuts, reverse=True) and cuts[-1] < cuts[0] / 4
    assert all(h["pruned"] == h["regrown"] for h in result.history if "pruned" in h)


def test_the_mask_holds_after_every_optimizer_step(mlp, train, monkeypatch):
    checked = []
    original = Optimizer.step

    def step(self, lr):
        original(self, lr)
        if self.params.mask is not None:
            assert not (self.params.data[self.params.mask == 0]).any()
            checked.append(int((self.params.mask == 0).sum()))

    monkeypatch.setattr(Optimizer, "step", step)
    train_schedule(mlp, train.take(256), "set", ScheduleOptions(epochs=3, train=FAST))
    assert len(checked) == 3 * 4 and min(checked) > 0


def test_regrown_connections_start_at_zero_with_fresh_optimizer_state(mlp, train):
    run = TrainingRun(mlp, train.take(128), 2, FAST, masks={"fc1.weight": np.ones((128, 64), bool)})
    run.epoch()
    assert np.abs(run.opt._m).sum() > 0
    run.regrow("fc1.weight", np.array([0, 5]))
    offset = 0  # fc1.weight is the first trained weight
    assert run.weight("fc1.weight").reshape(-1)[[0, 5]].tolist() == [0.0, 0.0]
    assert not run.opt._m[offset + np.array([0, 5])].any() and not run.opt._v[offset + np.array([0, 5])].any()


def test_same_seed_same_model_other_seed_other_model(mlp, train):
    def weights(seed):
        options = ScheduleOptions(epochs=2, reinit="kaiming", train=TrainConfig(lr=1e-2, threads=1, seed=seed))
        return read_weights(train_schedule(mlp, train.take(256), "set", options).model, ["fc1.weight"])["fc1.weight"]
    np.testing.assert_array_equal(weights(3), weights(3))
    assert not np.array_equal(weights(3), weights(4))


def test_post_structured_removes_channels(cnn, train):
    result = train_schedule(cnn, train.take(192), "post-structured", ScheduleOptions(epochs=2, train=FAST))
    before = sum(layer.size for layer in find_layers(cnn))
    after = sum(layer.size for layer in find_layers(result.model))
    assert after < 0.75 * before and not result.masks
    assert result.info["plan"]["removed"] > 0


def _model_with_a_stopping_op() -> onnx.ModelProto:
    """Conv -> LpNormalization (no gradient rule: the first conv cannot train) -> Conv -> pool -> Gemm."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    weights = {"w1": rng.standard_normal((8, 1, 3, 3)), "w2": rng.standard_normal((8, 8, 3, 3)) / 8,
               "w3": rng.standard_normal((10, 8))}
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("LpNormalization", ["a"], ["n"], axis=1),
             helper.make_node("Conv", ["n", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["b"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "stop", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_weights_the_gradient_cannot_reach_are_still_pruned_and_distillation_needs_no_labels():
    """A conv in front of an op without a gradient rule: In-Training prunes it once, up front."""
    from onnxprune.load.data import synthetic_dataset
    from onnxprune.graph.model_graph import resolve_input_shapes

    model = _model_with_a_stopping_op()
    data = synthetic_dataset(session(model), resolve_input_shapes(model, None), samples=8)
    assert data.labels is None  # the loss is distillation from the model itself
    result = train_schedule(model, data, "in", ScheduleOptions(epochs=2, train=TrainConfig(batch_size=4, threads=1)))
    assert result.info["pruned_up_front"] == ["w1"]
    for row in result.layers:
        assert row["sparsity"] >= SPARSITY[row["kind"]] - 1.0 / row["size"], row["name"]


def test_bad_options_are_one_line_errors(cnn, train):
    with pytest.raises(BadInputError, match="unknown schedule"):
        train_schedule(cnn, train, "lottery")
    with pytest.raises(BadInputError, match="conv-sparsity"):
        ScheduleOptions(sparsity={"conv": 1.0, "linear": 0.5})
    with pytest.raises(BadInputError, match="per layer kind"):
        ScheduleOptions(sparsity={"attention": 0.5})


def test_post_training_on_digits_ends_close_to_dense(cnn, train, test_set):
    """Real signal: 1400 training digits, 397 held out; from the trained CNN's weights, 3 epochs (1 dense,
    prune 50% conv / 80% linear by magnitude, 2 fine-tuning) recover to within 4 points of dense (98.49%);
    magnitude pruning alone leaves under 60%."""
    dense = _accuracy(cnn, test_set)
    result = train_schedule(cnn, train, "post", ScheduleOptions(epochs=3, sparsity=SPARSITY, train=FAST))
    assert result.info["pruned_after_epoch"] == 1
    weights = read_weights(cnn, list(result.masks))
    pruned_only = apply_masks(cnn, {n: magnitude_mask(w, result.masks[n].mean()) for n, w in weights.items()})
    after = _accuracy(result.model, test_set)
    assert dense == pytest.approx(0.9849, abs=1e-3)
    assert _accuracy(pruned_only, test_set) < 0.6
    assert after >= dense - 0.04, (dense, after)


# ---- command line and passes ------------------------------------------------------------------------

def test_train_command_writes_a_sparse_model_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "set.onnx"
    args = ["train", str(FIXTURES / "digits_mlp_init.onnx"), "--data", str(FIXTURES / "digits_calib.npz"),
            "--val", str(FIXTURES / "digits_test.npz"), "--schedule", "set", "--epochs", "2", "--reinit",
            "--threads", "1", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "linear 8" in printed
    values = read_weights(onnx.load(str(out)), ["fc1.weight", "fc2.weight"])
    zeros = sum(int((v == 0).sum()) for v in values.values()) / sum(v.size for v in values.values())
    assert zeros >= 0.8 - 1e-3
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and len(err.splitlines()) == 1


def test_train_command_rejects_bad_values_in_one_line(tmp_path, capsys):
    base = ["train", str(FIXTURES / "digits_cnn.onnx"), "--data", str(FIXTURES / "digits_calib.npz"),
            "-o", str(tmp_path / "x.onnx"), "--schedule"]
    for extra, words in ((["set", "--linear-sparsity", "1.5"], "linear-sparsity"), (["pre", "--epochs", "0"], "epochs"),
                         (["lottery"], "invalid choice")):
        try:
            code = main(base + extra)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_schedules_are_passes(mlp):
    from onnxprune.passes import PassContext, Pipeline, available, create_pass

    assert {"PreTraining", "InTraining", "PostTraining", "SET", "PostTrainingStructured", "TrainSchedule"} <= \
        set(available())
    step = create_pass("set", {"epochs": 2, "linear_sparsity": 0.8, "lr": 1e-2})
    context = PassContext(dense=mlp, calib=str(FIXTURES / "digits_calib.npz"), threads=1)
    result = Pipeline([step]).run(mlp, context)
    values = read_weights(result.model, ["fc1.weight"])["fc1.weight"]
    assert (values == 0).mean() > 0.5
    with pytest.raises(BadInputError, match="unknown option"):
        create_pass("PostTraining", {"sparsity": 0.5})
    assert set(SCHEDULES) >= {"pre", "in", "post", "set", "post-structured"}
