"""The `onnxprune` command: prune, inspect. Exit 0 on success, 1 when validation or a gate fails,
2 on bad input or usage; every error is one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, progress
from .commands import COMMANDS as MORE_COMMANDS
from .commands import add_commands
from .errors import BadInputError, OnnxPruneError
from .ops.base import Barrier
from .outputs import add_flags as add_output_flags


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for any bad input
        self.exit(2, f"onnxprune: error: {message}\n")


def parse_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    """`name:1x3x224x224` items into a dict."""
    if not items:
        return None
    shapes = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
            assert sep and name and all(d > 0 for d in shapes[name])
        except (ValueError, AssertionError):
            raise BadInputError(f"--input-shape '{item}': expected NAME:DxDx... with positive dims") from None
    return shapes


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BadInputError(f"{flag} '{text}': expected comma-separated numbers") from None


def calib_source(args):
    """The --calib argument, with image options attached when it is a folder."""
    if not getattr(args, "calib", None) or not Path(args.calib).is_dir():
        return getattr(args, "calib", None)
    from .calibration import ImageOptions, load_calibration  # noqa: F401  (folders are read lazily by prune)
    resize = None
    if args.resize:
        try:
            h, w = (int(v) for v in args.resize.lower().split("x"))
            resize = (h, w)
        except ValueError:
            raise BadInputError(f"--resize '{args.resize}': expected HxW") from None
    options = ImageOptions(resize=resize, mean=_floats(args.mean, "--mean") or (0.0,),
                           std=_floats(args.std, "--std") or (1.0,), layout=args.layout)
    return _FolderSource(args.calib, options)


class _FolderSource:
    """A calibration folder with its image options, for load_calibration."""

    def __init__(self, path: str, options):
        self.path, self.options = path, options


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onnxprune", description="Structured pruning of ONNX models.")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    pr.add_argument("--calib", help="calibration data: .npz keyed by input names, or a folder of .npy/.npz/images")
    pr.add_argument("--calib-limit", type=int, metavar="N", help="use at most N calibration samples")
    pr.add_argument("--data", metavar="DATA.npz", help="held-out data for the fidelity/accuracy report (default: --calib)")
    pr.add_argument("--resize", metavar="HxW", help="image folders: resize to H x W")
    pr.add_argument("--mean", metavar="M[,M,M]", help="image folders: subtract this mean (after scaling to [0, 1])")
    pr.add_argument("--std", metavar="S[,S,S]", help="image folders: divide by this std")
    pr.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW", help="image folders: tensor layout")
    pr.add_argument("--round-to", type=int, default=None, help="keep widths a multiple of N (default 8)")
    pr.add_argument("--criterion", default=None,
                    help="importance: l1, l2, fpgm, lamp, bn_scale, random, activation, apoz, reconstruction, obs, "
                         "sensitivity (default: reconstruction with --calib, l2 without)")
    pr.add_argument("--scope", choices=["local", "global", "damage"], default=None,
                    help="local: the same share from every group; global: one ranking across groups; "
                         "damage: shares from each group's measured damage with recovery (needs --calib; "
                         "default: global with --calib, local without)")
    pr.add_argument("--max-layer-ratio", type=float, default=0.9, help="global scope: no group loses more than this share")
    pr.add_argument("--min-channels", type=int, default=1, help="no group keeps fewer channels than this")
    pr.add_argument("--exclude", action="append", metavar="PATTERN", help="leave groups touching matching node/tensor names whole")
    pr.add_argument("--recover", choices=["none", "bias", "lstsq", "sequential"], default=None,
                    help="re-solve consumers of removed channels from calibration data (no training); "
                         "sequential: every layer downstream, on the pruned model's own activations "
                         "(default: sequential with --calib, none without)")
    pr.add_argument("--save-plan", metavar="PLAN.json", help="write the chosen plan (groups and kept channels) as JSON")
    ft = pr.add_argument_group("fine-tuning in ONNX Runtime (after pruning and recovery)")
    ft.add_argument("--finetune", type=int, default=0, metavar="EPOCHS", help="train the pruned graph for EPOCHS epochs")
    ft.add_argument("--train-data", metavar="DATA.npz", help="training data (default: --calib)")
    ft.add_argument("--val", metavar="DATA.npz", help="validation data: keep the best epoch")
    ft.add_argument("--labels", action="store_true", help="train on the data's labels (default: distill from the dense model)")
    ft.add_argument("--lr", type=float, default=1e-3, help="learning rate (AdamW, cosine schedule)")
    ft.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--seed", type=int, default=0, help="seed for random choices")
    pr.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    pr.add_argument("--report", help="write the JSON report here")
    pr.add_argument("--bench-rounds", type=int, default=20, help="interleaved latency rounds (0 to skip)")
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

    ins = sub.add_parser("inspect", help="show coupled channel groups and the barriers that freeze channels")
    ins.add_argument("model")
    ins.add_argument("--input-shape", action="append", metavar="NAME:DxD..")
    ins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_commands(sub)  # validate, bench, run (commands/)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress.configure(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", 0))
    try:
        return COMMANDS[args.command](args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Barrier as exc:  # a rule met something it cannot handle: name it, no traceback
        print(f"onnxprune: error: unsupported model structure: {exc}; pass --input-shape or see "
              "`onnxprune inspect`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxprune: interrupted", file=sys.stderr)
        return 130


def cmd_prune(args) -> int:
    from .api import DEFAULT_ROUND_TO, prune
    from .gates import evaluate_gates
    from .outputs import GATE_FLAGS, deliver, prepare

    out = prepare(args)  # existing output, --force, gate thresholds, --plot: usage errors before any work
    result = prune(args.model, args.ratio, calib=calib_source(args), calib_limit=args.calib_limit, eval_data=args.data,
                   round_to=args.round_to if args.round_to is not None else DEFAULT_ROUND_TO,
                   criterion=args.criterion, scope=args.scope, max_layer_ratio=args.max_layer_ratio,
                   min_channels=args.min_channels, exclude=args.exclude, target_macs=args.target_macs,
                   target_params=args.target_params, target_latency=args.target_latency, recover=args.recover,
                   plan=args.plan, input_shapes=parse_shapes(args.input_shape), bench_rounds=args.bench_rounds,
                   finetune_epochs=args.finetune, train_data=args.train_data, val_data=args.val, labels=args.labels,
                   lr=args.lr, batch_size=args.batch_size,
                   threads=args.threads, seed=args.seed, progress=not args.quiet and sys.stderr.isatty())
    if args.save_plan:
        from .plan import save_plan
        save_plan(result.plan, args.save_plan)
    gates = evaluate_gates(result.report["fidelity"], args.min_cosine, args.max_drop, GATE_FLAGS)
    deliver(result.report, result.model, out, gates, force=args.force, report_path=args.report,
            summary_path=args.summary, plot_dir=args.plot, dense=args.model, quiet=args.quiet)
    return 0


def cmd_inspect(args) -> int:
    from .api import analyse, as_model
    from .inspect import format_inspect, inspect_dict

    model, _ = as_model(args.model)
    dep = analyse(model, parse_shapes(args.input_shape))
    print(json.dumps(inspect_dict(dep), indent=1) if args.json else format_inspect(dep))
    return 0


def cmd_sparsify(args) -> int:
    from .api import as_model, sparsify
    from .model import save_model_atomic
    from .report import write_json_atomic

    out = Path(args.output)
    if out.exists() and not args.force:
        raise BadInputError(f"{out}: already exists; pass --force to overwrite it")
    amounts = {"conv": args.conv_sparsity if args.conv_sparsity is not None else args.sparsity,
               "linear": args.linear_sparsity if args.linear_sparsity is not None else args.sparsity}
    if args.pattern == "unstructured" and any(v is None for v in amounts.values()):
        raise BadInputError("give --sparsity, or both --conv-sparsity and --linear-sparsity")
    model, _ = as_model(args.model)
    result = sparsify(model, {k: v or 0.0 for k, v in amounts.items()}, scope=args.scope, pattern=args.pattern,
                      sparse_initializers=args.sparse_initializers, eval_data=args.data)
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
    from .api import analyse, as_model
    from .calibration import load_calibration
    from .graph import ModelGraph
    from .report import write_json_atomic
    from .sensitivity import format_sensitivity, group_sensitivity, plot_sensitivity

    model, _ = as_model(args.model)
    shapes = parse_shapes(args.input_shape)
    probe = ModelGraph(model, shapes)
    data = load_calibration(args.calib, {n: len(probe.input_shapes[n]) for n in probe.inputs}, limit=args.calib_limit)
    ratios = _floats(args.ratios, "--ratios")
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
