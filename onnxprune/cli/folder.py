"""`onnxprune prune FOLDER -o OUT_FOLDER ...`: a model folder (genai_config.json or config.json beside the
model) pruned as a unit (onnxprune/folder.py). The output folder gets the pruned model under the same
file name, the configs with the pruned shape values, and every other file (tokenizer, chat template)
as it was; all of them are claimed before any work and land together or not at all."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.errors import BadInputError
from onnxprune.load.destinations import Destinations
from onnxprune.load.model_folder import open_folder


def claim(args: argparse.Namespace, guard: Destinations) -> None:
    """Register the folder's files as inputs and claim the output folder's files (claims.py): the model
    under its own name (with room for its external data), the configs, the files copied."""
    folder = open_folder(args.model)
    guard.input(args.model, "model folder")
    guard.input(folder.model, "model", model=True)
    if Path(args.output).suffix == ".onnx":
        raise BadInputError(f"-o {args.output}: the input is a model folder, so the output is a folder too")
    guard.folder(args.output, "-o", [*folder.configs, *(p.name for p in folder.others)])
    guard.claim(Path(args.output) / folder.model.name, "-o", model=True)


def cmd_prune_folder(args: argparse.Namespace, options) -> int:
    from onnxprune.check.gates import check_thresholds, evaluate_gates
    from onnxprune.cli.args import calib_source, folder_source
    from onnxprune.errors import ValidationError
    from onnxprune.folder import prune_folder
    from onnxprune.load.destinations import all_or_nothing
    from onnxprune.load.files import write_bytes_atomic, write_json_atomic, write_text_atomic
    from onnxprune.options import FinetuneOptions
    from onnxprune.report.formats import format_summary
    from onnxprune.report.outputs import GATE_FLAGS, deliver

    check_thresholds(args.min_cosine, args.max_drop, GATE_FLAGS)
    if args.steps > 1:
        raise BadInputError("--steps with a model folder: not supported; prune the folder's .onnx file instead")
    tune = FinetuneOptions(epochs=args.finetune, lr=args.lr, batch_size=args.batch_size, labels=args.labels,
                           minutes=args.finetune_minutes, augment=args.augment)
    result = prune_folder(args.model, options, calib=calib_source(args), eval_data=args.data,
                          train_data=folder_source(args, "train_data"), val_data=args.val, finetune=tune)
    out = Path(args.output)
    with all_or_nothing(keep_on=(ValidationError,)):  # model, configs, copies, plan, reports land together;
        # a missed gate (raised by deliver before the configs) lands the report alone
        if args.save_plan:
            write_json_atomic(result.plan.to_json(), args.save_plan)
        gates = evaluate_gates(result.report["fidelity"], args.min_cosine, args.max_drop, GATE_FLAGS)
        deliver(result.report, result.model, out / result.folder.model.name, gates, force=args.force,
                report_path=args.report, summary_path=args.summary, plot_dir=args.plot,
                dense=result.folder.model, quiet=True)
        for name, text in result.configs.items():
            write_text_atomic(text, out / name)
        for path in result.folder.others:
            write_bytes_atomic(path.read_bytes(), out / path.name)
    if not args.quiet:
        print(format_summary(result.report))
        changes = result.report["folder"]["config_changes"]
        for name, keys in changes.items():
            print(f"{name}: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in keys.items()))
        print(f"wrote the folder {out} ({len(result.configs)} config(s) updated, "
              f"{len(result.folder.others)} file(s) copied)")
    return 0
