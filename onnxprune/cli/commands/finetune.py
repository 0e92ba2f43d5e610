"""`onnxprune finetune MODEL --data DATA -o OUT`: train an ONNX model's weights in ONNX Runtime."""

from __future__ import annotations


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_distill_flags, add_image_flags, add_verbosity

    p = sub.add_parser("finetune", help="train a (pruned) model's weights in ONNX Runtime: distillation or labels")
    p.add_argument("model", help="the .onnx model to train (never modified)")
    p.add_argument("--data", required=True, metavar="DATA", help="training data: .npz keyed by input names, or a "
                   "folder of images or .npy/.npz arrays")
    p.add_argument("-o", "--output", required=True, help="where to write the trained model")
    p.add_argument("--teacher", metavar="DENSE.onnx", help="distill from this model's outputs (no labels needed)")
    p.add_argument("--labels", action="store_true", help="train on the data's labels (cross-entropy)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 3, or as many as --minutes allow)")
    p.add_argument("--minutes", type=float, metavar="M", help="training time budget in minutes")
    p.add_argument("--augment", metavar="flip,crop,scale", help="augment training images")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    add_image_flags(p)
    p.add_argument("--lr", type=float, default=None, help="default: chosen by a short range test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--feature-distill", type=float, default=0.0, metavar="W",
                   help="with --teacher: also match the outputs of pruned layers (at their kept channels) and of their "
                        "consumers to the teacher's, with weight W")
    add_distill_flags(p)  # --distill, --select
    p.add_argument("--val", metavar="DATA.npz", help="validation data: keep the best epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_verbosity(p)


def run(args) -> int:
    from pathlib import Path

    from onnxprune import progress
    from onnxprune.errors import BadInputError
    from onnxprune.load.model import load_model, save_model_atomic
    from onnxprune.options import FinetuneOptions
    from onnxprune.finetune_stage import finetune_model
    from onnxprune.stages import as_model

    out = Path(args.output)
    if out.exists() and not args.force:
        raise BadInputError(f"{out}: already exists; pass --force to overwrite it")
    if not args.labels and not args.teacher:
        raise BadInputError("say what to learn from: --teacher DENSE.onnx (distillation) or --labels")
    model, _ = as_model(args.model)
    teacher = load_model(args.teacher) if args.teacher else None
    from onnxprune.cli.args import folder_source
    from onnxprune.recover.checkpoint import checkpoint_path

    epochs = args.epochs if args.epochs is not None else (0 if args.minutes else 3)
    checkpoint = checkpoint_path(out)
    tune = FinetuneOptions(epochs=epochs, lr=args.lr, batch_size=args.batch_size, labels=args.labels,
                           minutes=args.minutes, augment=args.augment, checkpoint=str(checkpoint), resume=args.resume,
                           features=args.feature_distill, distill=args.distill, select=args.select)
    trained, info = finetune_model(model, tune, folder_source(args, "data"), teacher=teacher, val=args.val,
                                   seed=args.seed, threads=args.threads, progress=progress.enabled())
    from onnxprune.check.finite import check_finite
    check_finite(trained, model)  # a diverged run is never written (exit 1)
    save_model_atomic(trained, out, force=args.force)
    checkpoint.unlink(missing_ok=True)  # the output is written: nothing left to resume
    if not args.quiet:
        last = info["history"][-1]
        shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))  # lr 1e-06, not 0.0000
        loss = f"{info['loss']} {info['distill']}" if info.get("distill") else info["loss"]
        others = info.get("other_outputs") or []
        loss += f", {len(others)} other output{'s' if len(others) > 1 else ''} matched beside it" if others else ""
        print(f"trained {info['epochs']} epochs ({loss}) on {info['samples']} samples, kept epoch "
              f"{info['best_epoch']} (by {info['select']}): {shown}; wrote {out}")
    return 0
