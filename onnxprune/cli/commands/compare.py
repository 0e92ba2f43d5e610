"""`onnxprune compare MODEL --data TRAIN.npz --val TEST.npz`: every pruning schedule, side by side.

Trains the dense baseline and each schedule (pre, in, post, set, post-structured) for the same
epochs from the same weights, then prints accuracy, sparsity, nonzero parameters, zipped size,
ONNX Runtime latency (interleaved) and energy per inference (RAPL where readable, otherwise an
estimate labelled as one). Exit 0, or 2 for bad input or usage (--plot without matplotlib included).
"""

from __future__ import annotations


# what compare can leave behind: (flag, metavar, help)
OUTPUTS = (("--json", "R.json", "write the report as JSON (schema onnxprune.compare/1)"),
           ("--plot", "P.png", "write a PNG of the comparison (needs matplotlib)"),
           ("--save-dir", "DIR", "also write every trained model here (SCHEDULE.onnx)"))


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity
    from onnxprune.cli.commands.train import SCHEDULE_CHOICES, add_schedule_arguments

    p = sub.add_parser("compare", help="train every pruning schedule and compare accuracy, size, speed and energy")
    add_schedule_arguments(p)
    p.add_argument("--val", required=True, metavar="TEST.npz", help="held-out samples with 'labels' for accuracy")
    p.add_argument("--schedules", metavar="LIST", help=f"comma-separated subset of {','.join(SCHEDULE_CHOICES)} "
                                                       "(default: all; the dense baseline always runs)")
    p.add_argument("--batch", type=int, default=1, help="samples per inference when timing (default 1)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default 30)")
    for flag, metavar, text in OUTPUTS:
        p.add_argument(flag, metavar=metavar, help=text)
    p.add_argument("--force", action="store_true", help="overwrite existing --json/--plot/--save-dir files")
    add_verbosity(p)


def run(args) -> int:
    from pathlib import Path

    from onnxprune.errors import BadInputError
    from onnxprune.load.model import load_model, save_model_atomic
    from onnxprune.load.files import write_json_atomic
    from onnxprune.recover.schedules.compare import compare
    from onnxprune.recover.schedules.report import format_compare, plot_compare
    from onnxprune.cli.commands.train import load_data, schedule_options
    from onnxprune.progress import step_bar

    if args.plot:
        from onnxprune.report.plots import require_matplotlib
        require_matplotlib()
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path and Path(path).exists() and not args.force:
            raise BadInputError(f"{path}: already exists; pass --force to overwrite it ({flag})")
    if args.batch < 1 or args.rounds < 1:
        raise BadInputError(f"--batch and --rounds must be at least 1, got {args.batch} and {args.rounds}")
    options = schedule_options(args)
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()] if args.schedules else None
    model = load_model(args.model)
    data, val = load_data(model, args.data), load_data(model, args.val)
    if len(val) < args.batch:
        raise BadInputError(f"--batch {args.batch} is larger than the {len(val)} samples of {args.val}")
    done = compare(model, data, val, options, schedules=schedules, rounds=args.rounds, batch=args.batch,
                   threads=args.threads, bar_factory=step_bar)
    report = {"input": args.model, **done.report}
    if args.save_dir:
        from onnxprune.check.finite import check_finite
        for result in done.results:
            check_finite(result.model, model)
        for result in done.results:
            save_model_atomic(result.model, Path(args.save_dir) / f"{result.schedule}.onnx", force=args.force)
    if args.json:
        write_json_atomic(report, args.json)
    if args.plot:
        plot_compare(report, args.plot)
    if not args.quiet:
        print(format_compare(report))
    return 0
