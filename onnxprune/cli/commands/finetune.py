"""`onnxprune finetune MODEL --data DATA -o OUT`: train an ONNX model's weights in ONNX Runtime."""

from __future__ import annotations


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("finetune", help="train a (pruned) model's weights in ONNX Runtime: distillation or labels")
    p.add_argument("model", help="the .onnx model to train (never modified)")
    p.add_argument("--data", required=True, metavar="DATA.npz", help="training data keyed by input names")
    p.add_argument("-o", "--output", required=True, help="where to write the trained model")
    p.add_argument("--teacher", metavar="DENSE.onnx", help="distill from this model's outputs (no labels needed)")
    p.add_argument("--labels", action="store_true", help="train on the data's labels (cross-entropy)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
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
    from onnxprune.stages import as_model, finetune_model

    out = Path(args.output)
    if out.exists() and not args.force:
        raise BadInputError(f"{out}: already exists; pass --force to overwrite it")
    if not args.labels and not args.teacher:
        raise BadInputError("say what to learn from: --teacher DENSE.onnx (distillation) or --labels")
    model, _ = as_model(args.model)
    teacher = load_model(args.teacher) if args.teacher else None
    tune = FinetuneOptions(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, labels=args.labels)
    trained, info = finetune_model(model, tune, args.data, teacher=teacher, val=args.val, seed=args.seed,
                                   threads=args.threads, progress=progress.enabled())
    from onnxprune.check.finite import check_finite
    check_finite(trained, model)  # a diverged run is never written (exit 1)
    save_model_atomic(trained, out, force=args.force)
    if not args.quiet:
        last = info["history"][-1]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float))
        print(f"trained {info['epochs']} epochs ({info['loss']}) on {info['samples']} samples: {shown}; wrote {out}")
    return 0
