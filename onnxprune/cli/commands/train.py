"""`onnxprune train MODEL --data TRAIN.npz --schedule set -o OUT.onnx`: train under a pruning schedule.

The model is trained in ONNX Runtime (no PyTorch) from its own weights, or from a seeded fresh
initialisation with --reinit, and written with its conv layers at --conv-sparsity and its linear
layers at --linear-sparsity (zeros in the tensors; post-structured removes channels instead).
Exit 0 written, 2 bad input or usage (an existing output without --force is refused before training).
"""

from __future__ import annotations

import argparse

SCHEDULE_CHOICES = ("pre", "in", "post", "set", "post-structured", "dense")


def add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """Training data and schedule options shared by `train` and `compare`."""
    from onnxprune.recover.schedules import INITS

    p.add_argument("model", help="input .onnx file (never modified)")
    p.add_argument("--data", required=True, metavar="TRAIN.npz", help="training samples keyed by input name; "
                   "a 'labels' array trains on cross-entropy, without it the input model is distilled")
    p.add_argument("--epochs", type=int, default=10, help="epochs per schedule (default 10)")
    p.add_argument("--conv-sparsity", type=float, default=0.5, help="share of conv weights set to zero (default 0.5)")
    p.add_argument("--linear-sparsity", type=float, default=0.8,
                   help="share of linear (Gemm/MatMul) weights set to zero (default 0.8)")
    p.add_argument("--reinit", nargs="?", const="kaiming", choices=sorted(INITS), metavar="INIT",
                   help="train from scratch: draw fresh seeded weights (kaiming, the default, or "
                        f"{', '.join(sorted(set(INITS) - {'kaiming'}))}) instead of starting from the model's")
    p.add_argument("--zeta", type=float, default=0.3,
                   help="in, set: share of each layer's active weights cut and regrown per epoch (default 0.3)")
    p.add_argument("--zeta-decay", choices=("constant", "cosine"), default="constant",
                   help="in, set: keep zeta every epoch (constant, SET's rule, the default) or anneal it along a "
                        "cosine towards 0 at the last cut (RigL's rule)")
    p.add_argument("--lr", type=float, help="learning rate (default 3e-3 from the model's weights, 1e-2 with --reinit)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per step (default 64)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw", help="default adamw")
    p.add_argument("--seed", type=int, default=0, help="initialisation, data order and regrowth (default 0)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default)")


def schedule_options(args):
    """ScheduleOptions from the parsed flags (BadInputError for values out of range)."""
    from onnxprune.errors import BadInputError
    from onnxprune.recover.schedules import ScheduleOptions, TrainConfig

    if args.threads < 0:
        raise BadInputError(f"--threads must be at least 0, got {args.threads}")
    train = TrainConfig(lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer, seed=args.seed,
                        threads=args.threads)
    return ScheduleOptions(epochs=args.epochs, sparsity={"conv": args.conv_sparsity, "linear": args.linear_sparsity},
                           zeta=args.zeta, zeta_decay=args.zeta_decay, reinit=args.reinit, train=train)


def load_data(model, path: str):
    """A Dataset keyed by the model's inputs (ranks from the model)."""
    from onnxprune.score.calibration import load_calibration
    from onnxprune.graph.model_graph import resolve_input_shapes

    from onnxprune.load.fit import check_fits
    data = load_calibration(path, {k: len(v) for k, v in resolve_input_shapes(model, None).items()})
    check_fits(model, data, path, labels=data.labels is not None)
    return data


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("train", help="train a model under a pruning schedule (pre, in, post, set, post-structured)")
    add_schedule_arguments(p)
    p.add_argument("--schedule", choices=SCHEDULE_CHOICES, required=True,
                   help="pre: prune at initialisation; in: prune and regrow each epoch; post: train, prune, "
                        "fine-tune; set: sparse evolutionary training; post-structured: channels; dense: none")
    p.add_argument("--val", metavar="VAL.npz", help="held-out samples with 'labels': accuracy per epoch and at the end")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--report", metavar="R.json", help="write the history, layers and options as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_verbosity(p)


def run(args) -> int:
    from onnxprune.load.model import load_model, save_model_atomic
    from onnxprune.report.outputs import check_destinations
    from onnxprune.load.files import write_json_atomic
    from onnxprune.recover.schedules import SCHEDULES, train_schedule
    from onnxprune.recover.schedules.measure import accuracy
    from onnxprune.progress import step_bar

    out = check_destinations(args.output, args.model, args.force)
    options = schedule_options(args)
    model = load_model(args.model)
    data = load_data(model, args.data)
    val = load_data(model, args.val) if args.val else None
    steps = options.epochs * -(-len(data) // options.train.batch_size)
    bar = step_bar(f"train ({args.schedule})", steps)
    try:
        result = train_schedule(model, data, args.schedule, options, val_data=val, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    from onnxprune.check.finite import check_finite
    check_finite(result.model, model)  # a diverged run is never written (exit 1)
    save_model_atomic(result.model, out, force=args.force)
    kinds: dict[str, list[int]] = {}
    for layer in result.layers:
        zero_total = kinds.setdefault(layer["kind"], [0, 0])
        zero_total[0] += layer["size"] - layer["nonzero"]
        zero_total[1] += layer["size"]
    scored = val if val is not None else data
    acc = accuracy(result.model, scored, options.train.threads)
    if args.report:
        write_json_atomic({"schema": "onnxprune.train/1", "input": args.model, "output": str(out),
                           "schedule": args.schedule, "accuracy": acc, "accuracy_on": "val" if val else "train",
                           "options": {"epochs": options.epochs, "sparsity": options.sparsity, "zeta": options.zeta,
                                       "zeta_decay": options.zeta_decay,
                                       "reinit": options.reinit, "lr": options.train.lr,
                                       "batch_size": options.train.batch_size, "seed": options.train.seed},
                           "info": result.info, "layers": result.layers, "history": result.history}, args.report)
    if not args.quiet:
        spars = ", ".join(f"{kind} {zeros / total:.1%}" for kind, (zeros, total) in kinds.items())
        shown = f"accuracy {acc:.4f} on {'--val' if val else 'the training data'}; " if acc is not None else ""
        print(f"{SCHEDULES[args.schedule].title}, {options.epochs} epochs: {shown}sparsity {spars}; wrote {out}")
    return 0
