"""The `onnxprune` command: prune, inspect. Exit 0 on success, 1 when validation or a gate fails,
2 on bad input or usage, 3 on an internal error (exits.py); every error is one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxprune import __version__, progress
from onnxprune.cli import exits
from onnxprune.cli.commands import COMMANDS as MORE_COMMANDS
from onnxprune.cli.args import Parser, add_distill_flags, add_image_flags, calib_source, floats, folder_source, parse_shapes
from onnxprune.cli.commands import add_commands
from onnxprune.errors import BadInputError
from onnxprune.report.outputs import add_flags as add_output_flags


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="onnxprune", description="Structured pruning of ONNX models.")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    pr = sub.add_parser("prune", help="remove channels and write a smaller, validated model")
    pr.add_argument("model", help="input .onnx file (never modified)")
    pr.add_argument("-o", "--output", required=True, help="output .onnx file")
    how = pr.add_argument_group("how much (exactly one)")
    how.add_argument("--ratio", type=float, help="share of each group's channels to remove (of all, with --scope global), in (0, 1)")
    how.add_argument("--target-macs", type=float, metavar="F", help="keep this fraction of the MACs (within 2%%)")
    how.add_argument("--target-params", type=float, metavar="F", help="keep this fraction of the parameters")
    how.add_argument("--target-latency", type=float, metavar="F",
                     help="keep this fraction of the dense ONNX Runtime latency on this machine (searched by measurement)")
    how.add_argument("--plan", metavar="PLAN.json", help="apply a saved plan (see --save-plan)")
    how.add_argument("--depth", type=int, default=0, metavar="K",
                     help="first remove K whole residual units (transformer layers, or residual blocks) whose removal "
                          "changes the outputs least on --calib; alone, or with one of the above (MACs, "
                          "parameter and latency targets count the removal)")
    how.add_argument("--hidden", choices=["auto", "on", "off"], default="auto",
                     help="transformers: also prune the residual-stream (hidden) width through every norm (needs "
                          "--calib); auto: only when the target cannot be reached otherwise")
    pr.add_argument("--calib", help="calibration data: .npz keyed by input names, or a folder of .npy/.npz/images")
    pr.add_argument("--calib-limit", type=int, metavar="N", help="use at most N calibration samples")
    pr.add_argument("--calib-views", type=int, default=None, metavar="K",
                    help="statistics, scoring and reconstruction see K label-free views of every calibration "
                         "sample (the sample, then blends of it with another; made a batch at a time; default with --calib: "
                         "4 at targets keeping 0.7 of the MACs or less, else 1)")
    pr.add_argument("--calib-view-kinds", default=None, metavar="KINDS",
                    help="what the views vary: crop, scale, flip, mix (float inputs), splice (integer inputs), comma-separated (default mix)")
    pr.add_argument("--data", metavar="DATA.npz", help="held-out data for the fidelity/accuracy report (default: --calib)")
    add_image_flags(pr)
    pr.add_argument("--round-to", type=int, default=None, help="keep each weight's width a multiple of N (default 8; an attention head counts as its columns; for --target-latency the CPU convolutions' channel block when larger: 16 with AVX-512)")
    pr.add_argument("--criterion", default=None,
                    help="importance: l1, l2, fpgm, lamp, bn_scale, random, activation, apoz, reconstruction, obs, relative, "
                         "fisher, fisher_parts, fisher_recon, fisher_logit (sigmoid/softmax outputs probed as logits), fisher_prior "
                         "(fisher plus a weight-norm floor), fisher_comp / fisher_logit_comp (times the share recovery cannot re-solve; _ordered: only from the channels ranked above), sensitivity (default with --calib: fisher_logit at targets keeping more than 0.7 of the MACs, fisher at deeper ones; l2 without)")
    pr.add_argument("--scope", choices=["local", "global", "damage", "price", "cost", "blend", "auto"], default=None,
                    help="local: the same share from every group; global: one ranking across groups; "
                         "damage: shares from each group's measured damage with recovery; price: the same "
                         "measurements, damage per MAC saved (both need --calib); cost: global, score per MAC saved; "
                         "blend: global, score per square root of the MACs saved; auto: cost at mild targets "
                         "(0.8 of the MACs and up), global at deeper ones (0.7 and down), between in between ("
                         "default: auto with --calib, local without)")
    pr.add_argument("--max-layer-ratio", type=float, default=None,
                    help="global scope: no group loses more than this share (default: 0.5 with the fisher criteria, "
                         "so with --calib; 0.9 otherwise)")
    pr.add_argument("--min-channels", type=int, default=1, help="no group keeps fewer channels than this")
    pr.add_argument("--exclude", action="append", metavar="PATTERN", help="leave groups touching matching node/tensor names whole")
    pr.add_argument("--recover", choices=["none", "bias", "lstsq", "sequential", "sequential_logit"], default=None,
                    help="re-solve consumers of removed channels from calibration data (no training); "
                         "sequential: every layer downstream, on the pruned model's own activations; "
                         "sequential_logit: the same, the layers giving an output Sigmoid's logits fit with rows "
                         "weighted by p(1-p) of the dense probability "
                         "(default: sequential with --calib, none without)")
    pr.add_argument("--save-plan", metavar="PLAN.json", help="write the chosen plan (groups and kept channels) as JSON")
    ft = pr.add_argument_group("fine-tuning in ONNX Runtime (after pruning and recovery)")
    ft.add_argument("--finetune", type=int, default=0, metavar="EPOCHS", help="train the pruned graph for EPOCHS epochs")
    ft.add_argument("--finetune-minutes", type=float, metavar="M",
                    help="training time budget in minutes (alone: as many epochs as fit; with --finetune: a cap)")
    ft.add_argument("--train-data", metavar="DATA", help="unlabelled training data: .npz, or a folder of images or "
                    ".npy/.npz arrays (read like --calib; default: --calib). With --calib too, an epoch less "
                    "faithful to the dense model on the calibration data than the pruned start is never kept")
    ft.add_argument("--augment", metavar="flip,crop,scale", help="augment training images (distillation targets follow)")
    ft.add_argument("--resume", action="store_true",
                    help="continue an interrupted fine-tuning run from its checkpoint beside the output")
    ft.add_argument("--steps", type=int, default=1, metavar="N",
                    help="prune toward the target in N steps, distilling from the dense model between them; "
                         "without --finetune, re-scoring the channels on the pruned model at each step")
    ft.add_argument("--val", metavar="DATA.npz", help="validation data: keep the best epoch")
    ft.add_argument("--labels", action="store_true", help="train on the data's labels (default: distill from the dense model)")
    ft.add_argument("--lr", type=float, default=None, help="learning rate (AdamW, cosine schedule); default: "
                    "the largest of 1e-3..3e-5 that a 4-step range test finds safe")
    ft.add_argument("--batch-size", type=int, default=64)
    ft.add_argument("--feature-distill", type=float, default=0.0, metavar="W",
                    help="also match the outputs of pruned layers (at their kept channels) and of their consumers to "
                         "the dense model's, with weight W")
    add_distill_flags(ft)  # --distill, --select (args.py)
    pr.add_argument("--seed", type=int, default=0, help="seed for random choices")
    pr.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    pr.add_argument("--report", help="write the JSON report here")
    pr.add_argument("--bench-rounds", type=int, default=20, help="latency rounds at most (0 to skip; a slow model gets those that fit in 2 s, at least 5)")
    pr.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    pr.add_argument("--force", action="store_true", help="overwrite an existing output")
    pr.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_output_flags(pr)  # --min-cosine, --max-drop, --summary, --plot, -v (outputs.py)

    sp = sub.add_parser("sparsify", help="zero the smallest weights (unstructured or N:M) of conv and linear layers")
    sp.add_argument("model")
    sp.add_argument("-o", "--output", required=True)
    sp.add_argument("--sparsity", type=float, help="share of weights to zero in every layer, in [0, 1)")
    sp.add_argument("--conv-sparsity", type=float, help="share for conv layers (overrides --sparsity)")
    sp.add_argument("--linear-sparsity", type=float, help="share for linear layers (overrides --sparsity)")
    sp.add_argument("--pattern", default="unstructured", help="unstructured, or N:M such as 2:4")
    sp.add_argument("--scope", choices=["local", "global"], default="local")
    sp.add_argument("--sparse-initializers", action="store_true", help="store mostly-zero weights as ONNX sparse initializers")
    sp.add_argument("--data", metavar="DATA.npz", help="data for the fidelity/accuracy report")
    sp.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    sp.add_argument("--report", help="write the JSON report here")
    sp.add_argument("--force", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")

    sen = sub.add_parser("sensitivity", help="prune each group alone at several shares; report the fidelity drop")
    sen.add_argument("model")
    sen.add_argument("--calib", required=True, help=".npz keyed by input names (labels give accuracy too)")
    sen.add_argument("--calib-limit", type=int, default=64, metavar="N", help="samples to evaluate on (default 64)")
    sen.add_argument("--ratios", default="0.25,0.5,0.75", help="shares of each group to remove")
    sen.add_argument("--input-shape", action="append", metavar="NAME:DxD..")
    sen.add_argument("--plot", metavar="PNG", help="write the curves as a PNG (needs matplotlib)")
    sen.add_argument("--json", metavar="FILE", help="write the table as JSON")
    sen.add_argument("--force", action="store_true", help="overwrite existing --plot/--json files")

    ins = sub.add_parser("inspect", help="show coupled channel groups and the barriers that freeze channels")
    ins.add_argument("model")
    ins.add_argument("--input-shape", action="append", metavar="NAME:DxD..")
    ins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_commands(sub)  # validate, bench, run (commands/)
    for command in sub.choices.values():  # every command loads models: one bound for constant subgraphs
        command.add_argument("--max-fold-mb", type=float, metavar="MB",
                             help="constant subgraphs may make at most this much (default: twice the weights, "
                                  "at least 1 GiB)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress.configure(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", 0))
    return exits.run(lambda: _run_command(args), verbose=getattr(args, "verbose", 0))


def _run_command(args) -> int:
    """Check option ranges (limits.py) and claim every output (claims.py) before any work, then run the
    command under that guard."""
    from onnxprune.cli.claims import for_command
    from onnxprune.load.limits import check_args

    check_args(args)
    if getattr(args, "max_fold_mb", None) is not None:
        from onnxprune.load.fold_limit import configure
        configure(args.max_fold_mb)
    guard = for_command(args)
    with guard.active():
        return COMMANDS[args.command](args)


def prune_options(args):
    """PruneOptions from the `prune` flags (validated: one message per bad option)."""
    from onnxprune.options import PruneOptions, Target

    target = Target(ratio=args.ratio, macs=args.target_macs, params=args.target_params, latency=args.target_latency,
                    plan=args.plan, depth=args.depth)
    return PruneOptions(target=target, criterion=args.criterion, scope=args.scope, recover=args.recover,
                        max_layer_ratio=args.max_layer_ratio, min_channels=args.min_channels,
                        round_to=args.round_to,
                        exclude=tuple(args.exclude or ()), input_shapes=parse_shapes(args.input_shape),
                        calib_limit=args.calib_limit, calib_views=args.calib_views,
                        calib_view_kinds=args.calib_view_kinds or (), bench_rounds=args.bench_rounds, threads=args.threads,
                        seed=args.seed, progress=not args.quiet and sys.stderr.isatty(), hidden=args.hidden)


def cmd_prune(args) -> int:
    from onnxprune.api import prune
    from onnxprune.check.gates import evaluate_gates
    from onnxprune.options import FinetuneOptions
    from onnxprune.report.outputs import GATE_FLAGS, deliver, prepare

    from onnxprune.recover.checkpoint import checkpoint_path
    from onnxprune.load.model_folder import is_model_folder

    if is_model_folder(args.model):  # pruned as a unit: model, configs, tokenizer (cli/folder.py)
        from onnxprune.cli.folder import cmd_prune_folder
        return cmd_prune_folder(args, prune_options(args))
    out = prepare(args)  # existing output, --force, gate thresholds, --plot: usage errors before any work
    checkpoint = checkpoint_path(args.output)
    tune = FinetuneOptions(epochs=args.finetune, lr=args.lr, batch_size=args.batch_size, labels=args.labels,
                           minutes=args.finetune_minutes, augment=args.augment, checkpoint=str(checkpoint),
                           resume=args.resume, features=args.feature_distill, distill=args.distill,
                           select=args.select)
    if args.steps > 1 and not tune.active:  # no training: the steps only re-score (stepwise.py)
        from onnxprune.stepwise import prune_stepwise
        result = prune_stepwise(args.model, args.steps, calib=calib_source(args), eval_data=args.data,
                                options=prune_options(args))
    elif args.steps > 1:
        from onnxprune.iterative import prune_iteratively
        result = prune_iteratively(args.model, args.steps, calib=calib_source(args), eval_data=args.data,
                                   train_data=folder_source(args, "train_data"), val_data=args.val,
                                   options=prune_options(args), finetune=tune)
    else:
        result = prune(args.model, calib=calib_source(args), eval_data=args.data,
                       train_data=folder_source(args, "train_data"), val_data=args.val, options=prune_options(args),
                       finetune=tune)
    from onnxprune.errors import ValidationError
    from onnxprune.load.destinations import all_or_nothing
    with all_or_nothing(keep_on=(ValidationError,)):  # the plan lands with the model and reports, or not at all
        if args.save_plan:
            from onnxprune.load.files import write_json_atomic
            write_json_atomic(result.plan.to_json(), args.save_plan)
        gates = evaluate_gates(result.report["fidelity"], args.min_cosine, args.max_drop, GATE_FLAGS)
        deliver(result.report, result.model, out, gates, force=args.force, report_path=args.report,
                summary_path=args.summary, plot_dir=args.plot, dense=args.model, quiet=args.quiet)
    for done in [checkpoint, *(Path(f"{checkpoint}.step{k}") for k in range(args.steps if args.steps > 1 else 0))]:
        done.unlink(missing_ok=True)  # the output is written: nothing left to resume
    return 0


def cmd_inspect(args) -> int:
    from onnxprune.api import analyse, as_model
    from onnxprune.report.inspect import format_inspect, inspect_dict

    model, _ = as_model(args.model)
    dep = analyse(model, parse_shapes(args.input_shape))
    print(json.dumps(inspect_dict(dep), indent=1) if args.json else format_inspect(dep))
    return 0


def cmd_sparsify(args) -> int:
    from onnxprune.api import as_model, sparsify
    from onnxprune.load.model import save_model_atomic
    from onnxprune.load.files import write_json_atomic

    out = Path(args.output)
    if out.exists() and not args.force:
        raise BadInputError(f"{out}: already exists; pass --force to overwrite it")
    amounts = {"conv": args.conv_sparsity if args.conv_sparsity is not None else args.sparsity,
               "linear": args.linear_sparsity if args.linear_sparsity is not None else args.sparsity}
    if args.pattern == "unstructured" and any(v is None for v in amounts.values()):
        raise BadInputError("give --sparsity, or both --conv-sparsity and --linear-sparsity")
    model, _ = as_model(args.model)
    result = sparsify(model, {k: v or 0.0 for k, v in amounts.items()}, scope=args.scope, pattern=args.pattern,
                      sparse_initializers=args.sparse_initializers, eval_data=args.data,
                      input_shapes=parse_shapes(args.input_shape))
    from onnxprune.check.finite import check_finite
    check_finite(result.model, model)
    from onnxprune.load.destinations import all_or_nothing
    with all_or_nothing():
        save_model_atomic(result.model, out, force=args.force)
        if args.report:
            write_json_atomic(result.report, args.report)
    if not args.quiet:
        rep = result.report
        print(f"sparsity {rep['sparsity']['sparsity']:.3f}; size {rep['sparsity']['size_bytes']} bytes, "
              f"{rep['sparsity']['zip_bytes']} zipped (dense: {rep['dense_zip_bytes']} zipped); "
              f"cosine {rep['fidelity']['cosine']:.5f}"
              + (f", accuracy {rep['fidelity']['accuracy_dense']:.4f} -> {rep['fidelity']['accuracy_pruned']:.4f}"
                 if "accuracy_dense" in rep["fidelity"] else ""))
    return 0


def cmd_sensitivity(args) -> int:
    from onnxprune.api import analyse, as_model
    from onnxprune.score.calibration import load_calibration
    from onnxprune.graph.model_graph import ModelGraph
    from onnxprune.load.files import write_json_atomic
    from onnxprune.select.sensitivity import format_sensitivity, group_sensitivity, plot_sensitivity

    model, _ = as_model(args.model)
    shapes = parse_shapes(args.input_shape)
    probe = ModelGraph(model, shapes)
    data = load_calibration(args.calib, {n: len(probe.input_shapes[n]) for n in probe.inputs}, limit=args.calib_limit)
    from onnxprune.load.fit import check_fits
    check_fits(model, data, args.calib)
    from onnxprune.load.spill import model_bytes
    from onnxprune.stages import _join_or_not
    _join_or_not(model, model_bytes(model), data)  # a model baking batch 1 is fed one sample at a time
    ratios = floats(args.ratios, "--ratios")
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise BadInputError(f"--ratios '{args.ratios}': shares must lie strictly between 0 and 1")
    dep = analyse(model, shapes or data.sample_shapes())
    rows = group_sensitivity(dep, data, ratios, progress=sys.stderr.isatty())
    print(format_sensitivity(rows))
    if args.plot:
        plot_sensitivity(rows, args.plot)
    if args.json:
        write_json_atomic({"schema": "onnxprune.sensitivity/1", "groups": rows}, args.json)
    return 0


COMMANDS = {"prune": cmd_prune, "inspect": cmd_inspect, "sensitivity": cmd_sensitivity, "sparsify": cmd_sparsify,
            **MORE_COMMANDS}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
