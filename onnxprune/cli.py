"""The `onnxprune` command: prune, inspect. Exit 0 on success, 1 when validation or a gate fails,
2 on bad input or usage; every error is one line on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import BadInputError, OnnxPruneError


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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="onnxprune", description="Structured pruning of ONNX models.")
    p.add_argument("--version", action="version", version=f"onnxprune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pr = sub.add_parser("prune", help="remove channels and write a smaller, validated model")
    pr.add_argument("model", help="input .onnx file (never modified)")
    pr.add_argument("-o", "--output", required=True, help="output .onnx file")
    pr.add_argument("--ratio", type=float, required=True, help="fraction of each group's channels to remove, in (0, 1)")
    pr.add_argument("--calib", help=".npz keyed by input names (first axis = samples), optional 'labels'")
    pr.add_argument("--round-to", type=int, default=None, help="keep widths a multiple of N (default 8)")
    pr.add_argument("--criterion", default="l2", help="importance criterion (l1, l2, random)")
    pr.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    pr.add_argument("--report", help="write the JSON report here")
    pr.add_argument("--bench-rounds", type=int, default=20, help="interleaved latency rounds (0 to skip)")
    pr.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    pr.add_argument("--force", action="store_true", help="overwrite an existing output")
    pr.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")

    ins = sub.add_parser("inspect", help="show coupled channel groups and the barriers that freeze channels")
    ins.add_argument("model")
    ins.add_argument("--input-shape", action="append", metavar="NAME:DxD..")
    ins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except OnnxPruneError as exc:
        print(f"onnxprune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("onnxprune: interrupted", file=sys.stderr)
        return 130


def cmd_prune(args) -> int:
    from .api import DEFAULT_ROUND_TO, prune
    from .model import save_model_atomic
    from .report import format_summary, write_json_atomic

    out = Path(args.output)
    if out.exists() and not args.force:
        raise BadInputError(f"{out}: already exists; pass --force to overwrite it")
    if Path(args.model).exists() and out.exists() and out.resolve() == Path(args.model).resolve():
        raise BadInputError(f"{out}: the output would overwrite the input model")
    result = prune(args.model, args.ratio, calib=args.calib,
                   round_to=args.round_to if args.round_to is not None else DEFAULT_ROUND_TO,
                   criterion=args.criterion, input_shapes=parse_shapes(args.input_shape),
                   bench_rounds=args.bench_rounds, threads=args.threads)
    save_model_atomic(result.model, out, force=args.force)
    result.report["output"] = str(out)
    if args.report:
        write_json_atomic(result.report, args.report)
    if not args.quiet:
        print(format_summary(result.report))
    return 0


def cmd_inspect(args) -> int:
    from .api import analyse, as_model
    from .inspect import format_inspect, inspect_dict

    model, _ = as_model(args.model)
    dep = analyse(model, parse_shapes(args.input_shape))
    print(json.dumps(inspect_dict(dep), indent=1) if args.json else format_inspect(dep))
    return 0


COMMANDS = {"prune": cmd_prune, "inspect": cmd_inspect}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
