"""`onnxprune bench MODEL [MODEL ...]`: cost and measured speed of models, side by side."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("bench", help="params, MACs, size, latency, throughput, memory and energy of models")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".onnx files (latency is measured interleaved)")
    p.add_argument("--data", metavar="DATA.npz", help="real inputs keyed by input name (default: synthetic)")
    p.add_argument("--batch", type=int, default=1, help="samples per run, for latency and throughput (default 1)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")
    p.add_argument("--rounds", type=int, default=30, help="timed interleaved rounds (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    p.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    p.add_argument("--per-layer", action="store_true", help="also print MACs per layer")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probe (a child process per model)")
    p.add_argument("--no-energy", action="store_true", help="skip the energy measurement")
    p.add_argument("--json", action="store_true", help="print JSON (schema onnxprune.bench/1)")
    add_verbosity(p)


def run(args) -> int:
    from onnxprune.check.bench import run_bench
    from onnxprune.cli.args import parse_shapes
    from onnxprune.errors import BadInputError
    from onnxprune.report.formats import format_bench

    if args.rounds < 1 or args.warmup < 0 or args.threads < 0:
        raise BadInputError("--rounds must be at least 1, --warmup and --threads at least 0")
    result = run_bench(args.models, data=args.data, batch=args.batch, threads=args.threads, rounds=args.rounds,
                       warmup=args.warmup, input_shapes=parse_shapes(args.input_shape),
                       memory=not args.no_memory, energy=not args.no_energy)
    if not args.quiet:
        print(json.dumps(result, indent=1) if args.json else format_bench(result, per_layer=args.per_layer))
    return 0
