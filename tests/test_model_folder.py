"""Model folders pruned as a unit (onnxprune/folder.py, cli/folder.py) on the GenAI-builder Llama folder of
fixtures/transformers/genai_llama_folder/ (made by fixtures/transformers/make_genai_folder.py; hidden 64,
2 layers, 4 heads over 2 KV heads of 16, intermediate 128).

Checked: the output folder's configs follow the pruned graph; the cache comes back with the pruned KV
heads and renumbered layers; removing a layer equals zeroing its o_proj and down_proj (the depth oracle,
through the fused SkipSimplifiedLayerNormalization); ONNX Runtime GenAI loads and generates from the
result when it is installed (the `genai` extra); bad folders exit 2 with one line, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from conftest import FIXTURES
from test_cli import assert_one_line_error, run_cli
from test_depth import outputs, zeroed

FOLDER = FIXTURES / "transformers" / "genai_llama_folder"
TOKENS = np.array([[3, 5, 7, 9, 11, 13, 17, 19]], np.int64)


def run_prompt(model: onnx.ModelProto, tokens: np.ndarray = TOKENS) -> np.ndarray:
    """Logits of the prompt pass, with an empty cache for every layer the model has."""
    feed = {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}
    for vi in model.graph.input:
        if vi.name.startswith("past_key_values."):
            kv, size = (d.dim_value for d in (vi.type.tensor_type.shape.dim[1], vi.type.tensor_type.shape.dim[3]))
            feed[vi.name] = np.zeros((1, kv, 0, size or 16), np.float32)
    return outputs(model, feed)[0]


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def depth_one(tmp_path_factory):
    out = tmp_path_factory.mktemp("depth") / "pruned"
    report = out.parent / "report.json"
    code = _main("prune", FOLDER, "-o", out, "--depth", "1", "--bench-rounds", "0", "--report", report, "-q")
    assert code == 0
    return out, json.loads(report.read_text())


@pytest.fixture(scope="module")
def half_heads(tmp_path_factory):
    out = tmp_path_factory.mktemp("heads") / "pruned"
    code = _main("prune", FOLDER, "-o", out, "--ratio", "0.5", "--scope", "local", "--round-to", "1",
                 "--bench-rounds", "0", "-q")
    assert code == 0
    return out


def _main(*args) -> int:
    from onnxprune.cli.main import main
    return main([str(a) for a in args])


def test_depth_one_removes_a_decoder_layer_of_the_folder(depth_one):
    out, report = depth_one
    before = digest(FOLDER)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    assert digest(out)["tokenizer.json"] == before["tokenizer.json"]  # copied as it was
    genai = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert genai["num_hidden_layers"] == 1 and genai["num_attention_heads"] == 4 and genai["num_key_value_heads"] == 2
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    model = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "past_key_values.0.key",
                                                   "past_key_values.0.value"]
    assert [o.name for o in model.graph.output] == ["logits", "present.0.key", "present.0.value"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GroupQueryAttention") == 1 and ops.count("SkipSimplifiedLayerNormalization") >= 1
    # the oracle: the dense folder model with the removed layer's two branch ends zeroed
    layer = int(report["depth"]["removed"][0]["name"].rsplit(".", 1)[1])
    dense = onnx.load(str(FOLDER / "model.onnx"))
    oracle = zeroed(dense, {f"model.layers.{layer}.attn.o_proj.MatMul.weight",
                            f"model.layers.{layer}.mlp.down_proj.MatMul.weight"})
    gap = np.abs(run_prompt(model) - run_prompt(oracle)).max()
    assert gap < 1e-4, gap
    assert np.abs(run_prompt(model) - run_prompt(dense)).max() > 1e-2
    assert report["folder"]["config_changes"]["genai_config.json"] == {"model.decoder.num_hidden_layers": [2, 1]}


def test_half_the_heads_follow_into_configs_and_cache(half_heads):
    genai = json.loads((half_heads / "genai_config.json").read_text())["model"]["decoder"]
    assert (genai["num_attention_heads"], genai["num_key_value_heads"], genai["head_size"]) == (2, 1, 16)
    hf = json.loads((half_heads / "config.json").read_text())
    assert (hf["num_attention_heads"], hf["num_key_value_heads"], hf["intermediate_size"]) == (2, 1, 64)
    model = onnx.load(str(half_heads / "model.onnx"))
    for vi in list(model.graph.input)[2:] + list(model.graph.output)[1:]:
        assert vi.type.tensor_type.shape.dim[1].dim_value == 1, vi.name
    logits = run_prompt(model)
    assert logits.shape == (1, TOKENS.shape[1], 96) and np.isfinite(logits).all()


@pytest.mark.parametrize("which", ["depth_one", "half_heads"])
def test_onnxruntime_genai_generates_from_the_pruned_folder(which, request):
    og = pytest.importorskip("onnxruntime_genai")
    out = request.getfixturevalue(which)
    out = out[0] if isinstance(out, tuple) else out
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=12, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(TOKENS.astype(np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    sequence = list(generator.get_sequence(0))
    assert sequence[:TOKENS.shape[1]] == TOKENS[0].tolist() and len(sequence) > TOKENS.shape[1]
    # greedy decoding of the first new token agrees with the prompt pass of the graph itself
    first = int(np.argmax(run_prompt(onnx.load(str(out / "model.onnx")))[0, -1]))
    assert sequence[TOKENS.shape[1]] == first


def test_a_config_that_disagrees_with_the_graph_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(FOLDER, bad)
    config = json.loads((bad / "genai_config.json").read_text())
    config["model"]["decoder"]["num_attention_heads"] = 8
    (bad / "genai_config.json").write_text(json.dumps(config))
    before = digest(bad)
    code, _, err = run_cli(capsys, "prune", bad, "-o", tmp_path / "out", "--depth", "1")
    assert code == 2
    assert_one_line_error(err, "num_attention_heads is 8", "the graph has 4")
    assert not (tmp_path / "out").exists() and digest(bad) == before


def test_folder_outputs_are_guarded(tmp_path, capsys):
    code, _, err = run_cli(capsys, "prune", FOLDER, "-o", FOLDER, "--depth", "1")
    assert code == 2
    assert_one_line_error(err, "would overwrite the input")
    code, _, err = run_cli(capsys, "prune", FOLDER, "-o", tmp_path / "x.onnx", "--depth", "1")
    assert code == 2
    assert_one_line_error(err, "output is a folder too")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    code, _, err = run_cli(capsys, "prune", FOLDER, "-o", existing, "--depth", "1")
    assert code == 2
    assert_one_line_error(err, "already exists", "--force")
    assert (existing / "config.json").read_text() == "{}" and sorted(p.name for p in existing.iterdir()) == ["config.json"]


def test_per_layer_widths_that_differ_are_refused_for_a_hugging_face_folder(tmp_path, capsys):
    hf = tmp_path / "hf"
    shutil.copytree(FOLDER, hf)
    (hf / "genai_config.json").unlink()  # config.json alone: its intermediate_size is what a runtime reads
    plan = tmp_path / "plan.json"
    code, _, err = run_cli(capsys, "prune", hf, "-o", tmp_path / "out", "--target-macs", "0.7", "--round-to", "1",
                           "--bench-rounds", "0", "--save-plan", plan)
    assert code == 2
    assert_one_line_error(err, "different intermediate", "config.json")
    assert not (tmp_path / "out").exists() and not plan.exists()


def _hf_folder(tmp_path, **config):
    """A Hugging Face-style folder around the TorchScript Llama export (hidden 32, 4 heads over 2 KV heads
    of 8, intermediate 64, 2 layers; plain ops, no cache)."""
    folder = tmp_path / "hf"
    folder.mkdir()
    shutil.copy(FIXTURES / "transformers" / "llama_gqa.onnx", folder / "model.onnx")
    stated = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, **config}
    (folder / "config.json").write_text(json.dumps(stated))
    (folder / "tokenizer.json").write_text("{}")
    return folder


def test_a_hugging_face_export_folder_gets_its_config_from_the_pruned_graph(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(capsys, "prune", _hf_folder(tmp_path), "-o", out, "--ratio", "0.5", "--scope", "local",
                              "--round-to", "1", "--bench-rounds", "0")
    assert code == 0 and "num_attention_heads 4 -> 2" in stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"],
            config["num_hidden_layers"], config["hidden_size"]) == (2, 1, 32, 2, 32)
    assert (out / "tokenizer.json").read_text() == "{}"
    model = onnx.load(str(out / "model.onnx"))
    feed = {"input_ids": np.arange(16, dtype=np.int64)[None] % 100, "attention_mask": np.ones((1, 16), np.int64)}
    assert outputs(model, feed)[0].shape == (1, 16, 128)


def test_a_hugging_face_config_with_other_kv_heads_exits_2(tmp_path, capsys):
    folder = _hf_folder(tmp_path, num_key_value_heads=4)
    code, _, err = run_cli(capsys, "prune", folder, "-o", tmp_path / "out", "--ratio", "0.3")
    assert code == 2
    assert_one_line_error(err, "num_key_value_heads is 4", "the graph has 2")
    assert not (tmp_path / "out").exists()


def test_a_missed_gate_writes_the_report_and_no_folder(tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, _, _ = run_cli(capsys, "prune", _hf_folder(tmp_path), "-o", out, "--depth", "1", "--min-cosine", "0.9999",
                         "--bench-rounds", "0", "--report", report)
    assert code == 1
    assert not out.exists() and json.loads(report.read_text())["output"] is None


def test_a_folder_with_external_data_leaves_no_stale_data_file(tmp_path, capsys):
    folder = tmp_path / "ext"
    shutil.copytree(FOLDER, folder)
    onnx.save(onnx.load(str(FOLDER / "model.onnx")), str(folder / "model.onnx"), save_as_external_data=True,
              location="model.onnx.data", size_threshold=0)  # as the builder writes larger models
    before = digest(folder)
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "prune", folder, "-o", out, "--depth", "1", "--bench-rounds", "0", "-q")
    assert code == 0 and digest(folder) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(n for n in before if n != "model.onnx.data")
    assert run_prompt(onnx.load(str(out / "model.onnx"))).shape == (1, TOKENS.shape[1], 96)
