"""Hostile and careless input: every case exits with the documented code, prints exactly one line on
stderr, leaves every input byte-for-byte unchanged and leaves no file behind.

Each case is a generator: it writes its inputs into a fresh folder and returns the command line and
the expected exit code (0 ok, 1 validation or gate, 2 bad input or usage). Most run in-process
(cli.main); memory bombs and signals run in a child process under an address-space cap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, ROOT
from onnxprune.cli.main import main

DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"
FAST = ["--bench-rounds", "0", "-q"]


# ---- helpers --------------------------------------------------------------------------------------

def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (symlinks as their target) and its digest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = sha(p)
        elif p.is_dir():
            out[str(p.relative_to(folder)) + "/"] = "dir"
    return out


def model_copy(work: Path, name: str = "m.onnx") -> Path:
    path = work / name
    shutil.copy(DIGITS, path)
    return path


def calib_copy(work: Path, name: str = "calib.npz") -> Path:
    path = work / name
    shutil.copy(CALIB, path)
    return path


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def tiny_conv_model(weight_from_bomb: bool = False, node_name: str = "conv", opset: int = 17,
                    domain_op: bool = False) -> onnx.ModelProto:
    """x[N,1,4,4] -> Conv(8 channels) -> Relu -> Conv(2 channels): something to prune."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 8, 1, 1)).astype(np.float32), "w2")
    nodes, inits = [], [w2]
    if weight_from_bomb:  # w1 = Reshape(Slice(ConstantOfShape([1e9]), 0, 72)): folding it whole takes 4 GB
        inits += [numpy_helper.from_array(np.array([10**9], np.int64), "big_shape"),
                  numpy_helper.from_array(np.array([0], np.int64), "s0"),
                  numpy_helper.from_array(np.array([72], np.int64), "s1"),
                  numpy_helper.from_array(np.array([8, 1, 3, 3], np.int64), "wshape")]
        nodes += [helper.make_node("ConstantOfShape", ["big_shape"], ["big"],
                                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])),
                  helper.make_node("Slice", ["big", "s0", "s1"], ["flat"]),
                  helper.make_node("Reshape", ["flat", "wshape"], ["w1"])]
    else:
        inits.append(w1)
    nodes += [helper.make_node("Conv", ["x", "w1"], ["h"], name=node_name, pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["h"], ["r"]),
              helper.make_node("Conv", ["r", "w2"], ["y"], name="head")]
    if domain_op:
        nodes.append(helper.make_node("Mystery", ["y"], ["z"], domain="com.example"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("z" if domain_op else "y", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.example", 1)] if domain_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def png(path: Path, size=(8, 8), mode="L") -> Path:
    from PIL import Image
    Image.new(mode, size, 128).save(path)
    return path


# ---- cases: (work folder) -> (argv, expected exit code) ----------------------------------------

def out_through_missing_folder(w):  # `nothere/..` resolves to the input itself
    m = model_copy(w)
    return ["prune", m, "-o", w / "nothere" / ".." / "m.onnx", "--ratio", "0.3", *FAST], 2


def out_through_missing_folder_force(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "nothere" / ".." / "m.onnx", "--ratio", "0.3", "--force", *FAST], 2


def out_existing_file_via_dotdot(w):
    m = model_copy(w)
    (w / "keep.onnx").write_bytes(b"keep")
    return ["prune", m, "-o", w / "x" / ".." / "keep.onnx", "--ratio", "0.3", *FAST], 2


def out_symlink_to_input(w):
    m = model_copy(w)
    (w / "link.onnx").symlink_to("m.onnx")
    return ["prune", m, "-o", w / "link.onnx", "--ratio", "0.3", "--force", *FAST], 2


def out_hardlink_to_input(w):
    m = model_copy(w)
    os.link(m, w / "hard.onnx")
    return ["prune", m, "-o", w / "hard.onnx", "--ratio", "0.3", "--force", *FAST], 2


def report_is_input_model(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--report", m, *FAST], 2


def report_is_calib(w):
    m, c = model_copy(w), calib_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--calib", c, "--report", c, "--force", *FAST], 2


def summary_is_input_model(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--summary", m, *FAST], 2


def save_plan_is_input_model(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--save-plan", m, *FAST], 2


def report_is_output(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--report", w / "o.onnx", *FAST], 2


def report_is_input_when_gate_fails(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.5", "--min-cosine", "0.9999", "--report", m, *FAST], 2


def sensitivity_json_is_model(w):
    m, c = model_copy(w), calib_copy(w)
    return ["sensitivity", m, "--calib", c, "--json", m, "--calib-limit", "8"], 2


def sparsify_over_input_force(w):
    m = model_copy(w)
    return ["sparsify", m, "-o", m, "--sparsity", "0.5", "--force", "-q"], 2


def sparsify_report_is_input(w):
    m = model_copy(w)
    return ["sparsify", m, "-o", w / "s.onnx", "--sparsity", "0.5", "--report", m, "-q"], 2


def finetune_over_input_force(w):
    m, c = model_copy(w), calib_copy(w)
    return ["finetune", m, "--data", c, "--labels", "-o", m, "--force", "-q"], 2


def finetune_over_teacher(w):
    m, c = model_copy(w), calib_copy(w)
    t = model_copy(w, "teacher.onnx")
    return ["finetune", m, "--data", c, "--teacher", t, "-o", t, "--force", "-q"], 2


def train_over_input_via_dotdot(w):
    m, c = model_copy(w), calib_copy(w)
    return ["train", m, "--data", c, "--schedule", "dense", "--epochs", "1", "-o", w / "x" / ".." / "m.onnx", "-q"], 2


def train_report_is_data(w):
    m, c = model_copy(w), calib_copy(w)
    return ["train", m, "--data", c, "--schedule", "dense", "--epochs", "1", "-o", w / "t.onnx", "--report", c], 2


def compare_save_dir_over_input(w):
    m = model_copy(w, "dense.onnx")
    c = calib_copy(w)
    return ["compare", m, "--data", c, "--val", c, "--schedules", "dense", "--epochs", "1", "--save-dir", w,
            "--force", "-q"], 2


def recipe_report_is_model(w):
    m, c = model_copy(w), calib_copy(w)
    (w / "r").mkdir()
    recipe = w / "r" / "rec.toml"
    recipe.write_text('input = "../m.onnx"\noutput = "../out.onnx"\ncalibration = "../calib.npz"\n'
                      'report = "../m.onnx"\n[[passes]]\npass = "ChannelPruning"\nratio = 0.1\n')
    return ["run", recipe, "--force", "-q"], 2


def recipe_output_over_recipe(w):
    model_copy(w)
    recipe = w / "rec.json"
    recipe.write_text(json.dumps({"input": "m.onnx", "output": "rec.json",
                                  "passes": [{"pass": "ChannelPruning", "ratio": 0.1}]}))
    return ["run", recipe, "--force", "-q"], 2


def output_under_a_file(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "m.onnx" / "x.onnx", "--ratio", "0.3", *FAST], 2


def output_is_folder(w):
    m = model_copy(w)
    (w / "d").mkdir()
    return ["prune", m, "-o", w / "d", "--ratio", "0.3", "--force", *FAST], 2


def output_in_unwritable_place(w):
    m = model_copy(w)
    return ["prune", m, "-o", "/proc/onnxprune-nothere/x.onnx", "--ratio", "0.3", *FAST], 2


def output_exists_without_force(w):
    m = model_copy(w)
    (w / "o.onnx").write_bytes(b"old")
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def report_exists_without_force(w):
    m = model_copy(w)
    (w / "r.json").write_text("{}")
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--report", w / "r.json", *FAST], 2


# -- exit codes and one-line messages --

def opset_99(w):
    return ["prune", save(tiny_conv_model(opset=99), w / "m.onnx"), "-o", w / "o.onnx", "--ratio", "0.5", *FAST], 2


def unknown_domain_op(w):
    m = save(tiny_conv_model(domain_op=True), w / "m.onnx")
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.5", *FAST], 2


def bench_opset_99(w):
    return ["bench", save(tiny_conv_model(opset=99), w / "m.onnx"), "--rounds", "1", "--no-memory", "--no-energy",
            "-q"], 2


def bench_cycle(w):
    model = tiny_conv_model()
    model.graph.node[1].input[0] = "y"  # Relu reads the head's output: a cycle
    return ["bench", save(model, w / "m.onnx"), "--rounds", "1", "--no-memory", "--no-energy", "-q"], 2


def node_name_with_newlines(w):  # the refusal names the node: its newlines and escapes must stay escaped
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    wq = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.uint8), "w")
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], name="evil\nname\r\x1b[31mred")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [wq]), opset_imports=[helper.make_opsetid("", 17)])
    return ["prune", save(model, w / "m.onnx"), "-o", w / "o.onnx", "--ratio", "0.5", *FAST], 2


def activation_without_calib(w):
    m = model_copy(w)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", "--criterion", "activation", *FAST], 2


def _image_folder(w, files) -> Path:
    folder = w / "imgs"
    folder.mkdir()
    for name, make in files.items():
        make(folder / name)
    return folder


def corrupt_png(w):
    folder = _image_folder(w, {"a.png": png, "b.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really")})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, *FAST], 2


def truncated_png(w):
    def cut(p):
        png(p)
        p.write_bytes(p.read_bytes()[:30])
    folder = _image_folder(w, {"a.png": cut})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, *FAST], 2


def bomb_png(w):
    def bomb(p):  # a tiny file declaring 60000 x 60000 pixels
        import struct
        import zlib
        raw = b"\x89PNG\r\n\x1a\n"
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
        raw += struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        p.write_bytes(raw + b"\0" * 16)
    folder = _image_folder(w, {"a.png": bomb})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, *FAST], 2


def resize_zero(w):
    folder = _image_folder(w, {"a.png": png})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, "--resize", "0x0",
            *FAST], 2


def mixed_image_sizes(w):
    folder = _image_folder(w, {"a.png": png, "b.png": lambda p: png(p, (9, 7))})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, "--criterion",
            "activation", *FAST], 2


def rgb_for_one_channel(w):
    folder = _image_folder(w, {"a.png": lambda p: png(p, mode="RGB")})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, "--criterion",
            "activation", *FAST], 2


def huge_input_shape(w):
    m = save(tiny_conv_model(), w / "m.onnx")
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.5", "--input-shape", "x:1x1x100000x100000", *FAST], 2


def bench_huge_batch(w):
    return ["bench", model_copy(w), "--batch", "100000000", "--no-memory", "--no-energy", "-q"], 2


def bench_huge_rounds(w):
    return ["bench", model_copy(w), "--rounds", "1000000000", "--no-memory", "--no-energy", "-q"], 2


def plan_as_list(w):
    plan = w / "plan.json"
    plan.write_text("[1, 2, 3]")
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--plan", plan, *FAST], 2


def _saved_plan(w, edit) -> Path:
    plan = w / "plan.json"
    assert main(["prune", str(DIGITS), "-o", str(w / "tmp.onnx"), "--ratio", "0.3", "--save-plan", str(plan),
                 *FAST]) == 0
    (w / "tmp.onnx").unlink()
    doc = json.loads(plan.read_text())
    edit(doc)
    plan.write_text(json.dumps(doc))
    return plan


def _set_first_index(value):
    def edit(doc):
        groups = doc["groups"]
        first = groups[0]
        key = "removed" if "removed" in first else next(k for k, v in first.items() if isinstance(v, list))
        first[key] = [value] + list(first[key])[1:]
    return edit


def plan_index_negative(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--plan", _saved_plan(w, _set_first_index(-1)), *FAST], 2


def plan_index_out_of_range(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--plan", _saved_plan(w, _set_first_index(10**6)),
            *FAST], 2


def recipe_wrong_type(w):
    model_copy(w)
    recipe = w / "rec.toml"
    recipe.write_text('input = "m.onnx"\noutput = "o.onnx"\n[[passes]]\npass = "ChannelPruning"\nratio = "lots"\n')
    return ["run", recipe, "-q"], 2


def recipe_invalid_utf8(w):
    model_copy(w)
    recipe = w / "rec.toml"
    recipe.write_bytes(b'input = "m.onnx"\noutput = "\xff\xfe.onnx"\n')
    return ["run", recipe, "-q"], 2


def lr_nan(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--finetune", "1", "--lr", "nan",
            "--calib", calib_copy(w), *FAST], 2


def lr_inf_finetune(w):
    return ["finetune", model_copy(w), "--data", calib_copy(w), "--labels", "--lr", "inf", "-o", w / "o.onnx",
            "-q"], 2


def max_layer_ratio_5(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--scope", "global",
            "--max-layer-ratio", "5", *FAST], 2


def ratio_nan(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "nan", *FAST], 2


def calib_limit_negative(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", calib_copy(w),
            "--calib-limit", "-5", *FAST], 2


def threads_huge(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--threads", "100000", *FAST], 2


def validate_wrong_dtype_data(w):
    m = model_copy(w)
    data = w / "d.npz"
    np.savez(data, input=np.zeros((4, 1, 8, 8), np.int64))
    return ["validate", m, m, "--data", data, "-q"], 2


def gate_fails(w):  # the control case for exit 1: a real gate failure still writes the report only
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.7", "--min-cosine", "0.99999", *FAST], 1


def ok_to_stdout(w):  # the control case for exit 0: the report streams to stdout, nothing replaced
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--report", "/dev/stdout", *FAST], 0


CASES = [out_through_missing_folder, out_through_missing_folder_force, out_existing_file_via_dotdot,
         out_symlink_to_input, out_hardlink_to_input, report_is_input_model, report_is_calib, summary_is_input_model,
         save_plan_is_input_model, report_is_output, report_is_input_when_gate_fails, sensitivity_json_is_model,
         sparsify_over_input_force, sparsify_report_is_input, finetune_over_input_force, finetune_over_teacher,
         train_over_input_via_dotdot, train_report_is_data, compare_save_dir_over_input, recipe_report_is_model,
         recipe_output_over_recipe, output_under_a_file, output_is_folder, output_in_unwritable_place,
         output_exists_without_force, report_exists_without_force,
         opset_99, unknown_domain_op, bench_opset_99, bench_cycle, node_name_with_newlines, activation_without_calib,
         corrupt_png, truncated_png, bomb_png, resize_zero, mixed_image_sizes, rgb_for_one_channel, huge_input_shape,
         bench_huge_batch, bench_huge_rounds, plan_as_list, plan_index_negative, plan_index_out_of_range,
         recipe_wrong_type, recipe_invalid_utf8, lr_nan, lr_inf_finetune, max_layer_ratio_5, ratio_nan,
         calib_limit_negative, threads_huge, validate_wrong_dtype_data, gate_fails, ok_to_stdout]


def _npz(w: Path, name: str, **arrays) -> Path:
    path = w / name
    np.savez(path, **arrays)
    return path


def finetune_int_data(w):
    data = _npz(w, "d.npz", input=np.zeros((8, 1, 8, 8), np.int64), labels=np.zeros(8, np.int64))
    return ["finetune", model_copy(w), "--data", data, "--labels", "-o", w / "o.onnx", "-q"], 2


def train_nan_data(w):
    data = _npz(w, "d.npz", input=np.full((8, 1, 8, 8), np.nan, np.float32), labels=np.zeros(8, np.int64))
    return ["train", model_copy(w), "--data", data, "--schedule", "dense", "--epochs", "1", "-o", w / "o.onnx",
            "-q"], 2


def labels_out_of_range(w):
    data = _npz(w, "d.npz", input=np.zeros((8, 1, 8, 8), np.float32), labels=np.full(8, 99, np.int64))
    return ["finetune", model_copy(w), "--data", data, "--labels", "-o", w / "o.onnx", "-q"], 2


def bench_int_data(w):
    data = _npz(w, "d.npz", input=np.zeros((8, 1, 8, 8), np.int64))
    return ["bench", model_copy(w), "--data", data, "--rounds", "1", "--no-memory", "--no-energy", "-q"], 2


def calib_not_a_zip(w):
    (w / "c.npz").write_bytes(b"garbage")
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", w / "c.npz", *FAST], 2


def _external_model(w: Path, data_name: str) -> Path:
    model = onnx.load(str(DIGITS))
    path = w / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location=data_name, size_threshold=0)
    return path


def out_is_inputs_external_data(w):
    m = _external_model(w, "weights.bin")
    return ["prune", m, "-o", w / "weights.bin", "--ratio", "0.3", "--force", *FAST], 2


def out_sidecar_is_inputs_external_data(w):  # -o x.onnx would put a large model's data in x.onnx.data
    m = _external_model(w, "x.onnx.data")
    return ["prune", m, "-o", w / "x.onnx", "--ratio", "0.3", *FAST], 2


def report_is_sidecar_of_output(w):
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--report", w / "o.onnx.data", "--ratio", "0.3", *FAST], 2


def save_plan_over_plan(w):
    plan = _saved_plan(w, lambda doc: None)
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--plan", plan, "--save-plan", plan, "--force", *FAST], 2


def report_over_evaluation_data(w):
    data = calib_copy(w, "test.npz")
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--data", data, "--report", data,
            "--force", *FAST], 2


def plot_file_over_calibration_image(w):  # --plot DIR writes DIR/kept_channels.png: here an input image
    folder = _image_folder(w, {"kept_channels.png": png})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", folder, "--plot", folder,
            "--force", *FAST], 2


def finetune_over_validation_data(w):
    c = calib_copy(w)
    v = calib_copy(w, "val.npz")
    return ["finetune", model_copy(w), "--data", c, "--val", v, "--labels", "-o", v, "--force", "-q"], 2


def _relocated(w: Path, location: str) -> Path:
    """The digits model with its external data moved out of the work folder (to its parent) and
    every reference rewritten to `location` (which may or may not reach the moved file)."""
    m = _external_model(w, "weights.bin")
    os.replace(w / "weights.bin", w.parent / "outside.data")
    model = onnx.load(str(m), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save_model(model, str(m))
    return m


def external_data_missing(w):
    m = _external_model(w, "weights.bin")
    (w / "weights.bin").unlink()
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def external_data_truncated(w):
    m = _external_model(w, "weights.bin")
    os.truncate(w / "weights.bin", (w / "weights.bin").stat().st_size // 2)
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def external_data_dotdot(w):  # the file exists, outside the model's folder: never read
    return ["prune", _relocated(w, "../outside.data"), "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def external_data_absolute(w):
    return ["prune", _relocated(w, str(w.parent / "outside.data")), "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def external_data_symlink_escape(w):  # a link inside the folder to a file outside it
    m = _relocated(w, "link.data")
    os.symlink(w.parent / "outside.data", w / "link.data")
    return ["prune", m, "-o", w / "o.onnx", "--ratio", "0.3", *FAST], 2


def bench_external_data_dotdot(w):
    return ["bench", _relocated(w, "../outside.data"), "--rounds", "1", "--no-memory", "--no-energy", "-q"], 2


EXTERNAL = [external_data_missing, external_data_truncated, external_data_dotdot, external_data_absolute,
            external_data_symlink_escape]

MORE = [save_plan_over_plan, report_over_evaluation_data, plot_file_over_calibration_image,
        finetune_over_validation_data, out_is_inputs_external_data, out_sidecar_is_inputs_external_data, report_is_sidecar_of_output,
        finetune_int_data, train_nan_data, labels_out_of_range, bench_int_data, calib_not_a_zip,
        *EXTERNAL, bench_external_data_dotdot]
CASES += MORE


@pytest.mark.parametrize("case", EXTERNAL, ids=[c.__name__ for c in EXTERNAL])
def test_bad_external_data_names_the_tensor_and_the_file(case, tmp_path, capfd, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv, _ = case(work)
    capfd.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capfd.readouterr().err
    first = onnx.load(str(argv[1]), load_external_data=False).graph.initializer[0]
    location = next(e.value for e in first.external_data if e.key == "location")
    assert f"tensor '{first.name}'" in err and f"'{location}'" in err, err


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_hostile_input(case, tmp_path, capfd, monkeypatch):  # capfd: ONNX Runtime writes to fd 2 itself
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv, expected = case(work)
    before = snapshot(work)
    capfd.readouterr()
    code = main([str(a) for a in argv])
    _, err = capfd.readouterr()
    assert code == expected, err
    lines = err.splitlines()
    if expected == 0:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("onnxprune: "), err
        assert "Traceback" not in err and "\x1b" not in err and "\r" not in err
    if case is node_name_with_newlines:
        assert "evil\\nname\\r\\x1b[31mred" in err
    after = snapshot(work)
    for name, digest in before.items():  # every input byte-for-byte unchanged
        assert after.get(name) == digest, name
    new = sorted(set(after) - set(before))
    if expected == 2:  # refused before any work: nothing at all left behind
        assert new == [], new
    else:  # only the named outputs, no temporary files
        assert all(not Path(n).name.startswith(".") and not n.endswith(".tmp") for n in new), new


# ---- memory bombs: a child process under an address-space cap ----------------------------------

MEMORY_CAP = 2 * 2**30


def run_capped(argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m onnxprune ARGV` with at most MEMORY_CAP bytes of address space... plus what the
    interpreter and ONNX Runtime map at start (measured by the child as its own baseline)."""
    code = ("import resource, sys, runpy\n"
            "import numpy, onnx, onnxruntime\n"  # their libraries map address space before the cap counts
            "from onnxprune.cli import main as cli\n"
            "base = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
            f"resource.setrlimit(resource.RLIMIT_AS, (base + {MEMORY_CAP}, base + {MEMORY_CAP}))\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def fold_bomb(w):
    return ["prune", save(tiny_conv_model(weight_from_bomb=True), w / "m.onnx"), "-o", w / "o.onnx", "--ratio",
            "0.5", *FAST], 2


def npz_with_unused_huge_array(w):
    """A zip whose unused member declares 4 GB: never read. (Its bytes are a header only.)"""
    import zipfile
    path = w / "calib.npz"
    shutil.copy(CALIB, path)
    header = np.lib.format
    with zipfile.ZipFile(path, "a") as zf:
        with zf.open("unused.npy", "w") as f:
            header.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (2**30,)})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", path, "--criterion",
            "activation", *FAST], 0


def npz_with_huge_input_array(w):
    import zipfile
    path = w / "calib.npz"
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("input.npy", "w") as f:
            np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (2**26, 1, 8, 8)})
    return ["prune", model_copy(w), "-o", w / "o.onnx", "--ratio", "0.3", "--calib", path, *FAST], 2


BOMBS = [fold_bomb, npz_with_unused_huge_array, npz_with_huge_input_array]


@pytest.mark.parametrize("case", BOMBS, ids=[c.__name__ for c in BOMBS])
def test_bombs_stay_under_the_memory_cap(case, tmp_path):
    argv, expected = case(tmp_path)
    before = snapshot(tmp_path)
    done = run_capped(argv, tmp_path)
    assert done.returncode == expected, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == (0 if expected == 0 else 1), done.stderr
    after = snapshot(tmp_path)
    assert all(after.get(k) == v for k, v in before.items())
    assert set(after) - set(before) <= ({"o.onnx"} if expected == 0 else set())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_the_save_leaves_nothing(tmp_path, sig):
    """SIGTERM or SIGHUP while the model is being written: exit 128+N, one line, no temporary file,
    no output, the input unchanged (as for Ctrl-C)."""
    code = ("import sys, time, onnx\n"
            "real = onnx.save_model\n"
            "def slow(proto, f, *a, **k):\n"
            "    open(f, 'wb').write(proto.SerializeToString()[:100])\n"
            "    print('saving', flush=True)\n"
            "    time.sleep(30)\n"
            "onnx.save_model = slow\n"
            "from onnxprune.cli import main as cli\n"
            "sys.exit(cli.main(sys.argv[1:]))\n")
    m = model_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", code, "prune", str(m), "-o", str(tmp_path / "o.onnx"), "--ratio",
                              "0.3", "--bench-rounds", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "saving"
    assert any(p.name.startswith(".o.onnx.") for p in tmp_path.iterdir())  # the temporary file exists now
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + sig
    assert err.splitlines() == ["onnxprune: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert sha(m) == sha(DIGITS)


def test_nan_weights_are_never_written(tmp_path, capsys, monkeypatch):
    """A fine-tune that diverged: exit 1 naming the tensor, no model written."""
    import onnxprune.finetune_stage as api

    def diverged(model, *args, **kwargs):
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        t = broken.graph.initializer[0]
        t.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(t).shape, np.nan, np.float32), t.name))
        return broken, {"epochs": 1, "loss": "distill", "samples": 1, "history": [{}]}
    monkeypatch.setattr(api, "finetune_model", diverged)
    m, c = model_copy(tmp_path), calib_copy(tmp_path)
    code = main([str(a) for a in ("finetune", m, "--data", c, "--labels", "-o", tmp_path / "o.onnx", "-q")])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1
    name = onnx.load(str(DIGITS)).graph.initializer[0].name
    assert f"'{name}'" in err and "NaN" in err
    assert not (tmp_path / "o.onnx").exists()


def test_models_over_2gb_are_checked_by_path(monkeypatch):
    """protobuf 7 raises EncodeError when the checker serializes a model over 2 GB: the model is then
    checked by path (the checker reads its external data itself) instead of crashing."""
    from google.protobuf.message import EncodeError

    from onnxprune.errors import BadInputError
    from onnxprune.load.model import load_model

    real, by_path = onnx.checker.check_model, []

    def checker(model, *args, **kwargs):
        if isinstance(model, onnx.ModelProto):
            raise EncodeError("Failed to serialize proto")
        by_path.append(model)
        return real(model, *args, **kwargs)
    monkeypatch.setattr(onnx.checker, "check_model", checker)
    assert load_model(DIGITS).graph.node and by_path == [str(DIGITS)]

    def invalid(model, *args, **kwargs):
        if isinstance(model, onnx.ModelProto):
            raise EncodeError("Failed to serialize proto")
        raise onnx.checker.ValidationError("bad node\nsecond line")
    monkeypatch.setattr(onnx.checker, "check_model", invalid)
    with pytest.raises(BadInputError, match="fails the ONNX checker \\(bad node\\)"):
        load_model(DIGITS)



def test_an_internal_error_is_one_line_and_exit_3(tmp_path, capsys, monkeypatch):
    """A bug (here: a command that raises) exits 3 with one line naming a log file with the traceback;
    with -v the traceback is printed instead."""
    import onnxprune.cli.main as cli

    def broken(args):
        raise ZeroDivisionError("a bug\nwith two lines")
    monkeypatch.setitem(cli.COMMANDS, "bench", broken)
    code = main(["bench", str(DIGITS)])
    err = capsys.readouterr().err
    assert code == 3 and len(err.splitlines()) == 1
    assert "internal error" in err and "ZeroDivisionError: a bug" in err and "Traceback" not in err
    log = Path(err.rsplit("traceback in ", 1)[1].strip())
    try:
        assert "ZeroDivisionError" in log.read_text()
    finally:
        log.unlink()
    code = main(["bench", str(DIGITS), "-v"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" in err and err.splitlines()[-1].startswith("onnxprune: internal error")


def test_calib_limit_applies_before_images_are_decoded(tmp_path, capsys):
    """--calib-limit 2 reads two images: a broken third one is never opened."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    png(folder / "a.png", (16, 16), "RGB")
    png(folder / "b.png", (16, 16), "RGB")
    (folder / "c.png").write_bytes(b"not an image")
    code = main([str(a) for a in ("prune", FIXTURES / "chain.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.3",
                                  "--calib", folder, "--calib-limit", "2", "--criterion", "activation", *FAST)])
    assert code == 0, capsys.readouterr().err
    assert main([str(a) for a in ("prune", FIXTURES / "chain.onnx", "-o", tmp_path / "p.onnx", "--ratio", "0.3",
                                  "--calib", folder, "--criterion", "activation", *FAST)]) == 2
    assert "c.png: not a readable image" in capsys.readouterr().err


@pytest.mark.parametrize("text", ['threads = 100000\n', '[[passes]]\npass = "ChannelPruning"\nratio = nan\n',
                                  '[[passes]]\npass = "ChannelPruning"\nratio = 0.3\nthreads = 99999\n',
                                  '[[passes]]\npass = "ChannelPruning"\nratio = true\n'],
                         ids=["threads", "nan-ratio", "pass-threads", "bool-ratio"])
def test_recipe_numbers_are_bounded(tmp_path, capsys, text):
    model_copy(tmp_path)
    recipe = tmp_path / "r.toml"
    passes = "" if "[[passes]]" in text else '[[passes]]\npass = "ChannelPruning"\nratio = 0.3\n'
    recipe.write_text(f'input = "m.onnx"\noutput = "o.onnx"\n{text}{passes}')
    assert main(["run", str(recipe), "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o.onnx").exists()


def test_dev_null_takes_every_output(tmp_path, capfd):
    """A dry run: the model and the report both go to /dev/null; nothing is created anywhere."""
    m = model_copy(tmp_path)
    code = main([str(a) for a in ("prune", m, "-o", "/dev/null", "--report", "/dev/null", "--ratio", "0.3", *FAST)])
    assert code == 0 and capfd.readouterr().err == ""
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_fifo_is_written_in_place(tmp_path, capfd):
    """A FIFO destination is opened and written, never replaced by a regular file."""
    import threading

    fifo = tmp_path / "summary.pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code = main([str(a) for a in ("prune", DIGITS, "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--summary", fifo,
                                  *FAST)])
    reader.join(timeout=30)
    assert code == 0, capfd.readouterr().err
    assert got and got[0].startswith("#") and fifo.is_fifo()


def test_symlinked_output_writes_through_the_link(tmp_path, capfd):
    """-o LINK --force replaces the file the link points to; the link itself stays a link."""
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to(target.name)
    code = main([str(a) for a in ("prune", DIGITS, "-o", link, "--ratio", "0.3", "--force", *FAST)])
    assert code == 0, capfd.readouterr().err
    assert link.is_symlink() and onnx.load(str(target)).graph.node
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "real.onnx"]


def test_a_writer_that_skips_the_guard_is_a_bug(tmp_path):
    """While a guard is active, writing a path nobody claimed raises (exit 3 at the command line)."""
    from onnxprune.load.destinations import Destinations
    from onnxprune.load.files import write_json_atomic

    guard = Destinations()
    guard.claim(tmp_path / "claimed.json", "--report")
    with guard.active():
        write_json_atomic({"a": 1}, tmp_path / "claimed.json")
        with pytest.raises(RuntimeError, match="without being claimed"):
            write_json_atomic({"a": 1}, tmp_path / "other.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claimed.json"]


def test_bad_evaluation_data_fails_before_any_work(tmp_path, capsys, monkeypatch):
    """--data that does not fit the model is refused (exit 2) before calibration statistics are gathered."""
    import onnxprune.stages as stages

    def never(*_args, **_kwargs):
        raise AssertionError("statistics gathered before the evaluation data was checked")
    monkeypatch.setattr(stages, "collect_statistics", never)
    bad = tmp_path / "eval.npz"
    np.savez(bad, input=np.zeros((4, 1, 1, 7, 7), np.float32))
    m, c = model_copy(tmp_path), calib_copy(tmp_path)
    code = main([str(a) for a in ("prune", m, "-o", tmp_path / "o.onnx", "--ratio", "0.3", "--calib", c,
                                  "--data", bad, "--criterion", "activation", "-q")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "eval.npz" in err
    assert not (tmp_path / "o.onnx").exists()
