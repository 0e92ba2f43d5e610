"""What every command shares: the parser that fails in one line, shape and number parsing, the
calibration-folder source, the verbosity flags."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxprune.errors import BadInputError


class Parser(argparse.ArgumentParser):
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


def floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise BadInputError(f"{flag} '{text}': expected comma-separated numbers") from None


def add_image_flags(p: argparse.ArgumentParser) -> None:
    """How a folder of images becomes tensors; read back by folder_source."""
    p.add_argument("--resize", metavar="HxW", help="image folders: resize to H x W")
    p.add_argument("--mean", metavar="M[,M,M]", help="image folders: subtract this mean (after scaling to [0, 1])")
    p.add_argument("--std", metavar="S[,S,S]", help="image folders: divide by this std")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], default="NCHW", help="image folders: tensor layout")


def add_distill_flags(p: argparse.ArgumentParser) -> None:
    """The distillation loss and the epoch kept, for prune --finetune and finetune (FinetuneOptions)."""
    from onnxprune.options import DISTILL_LOSSES, EPOCH_SELECTIONS
    p.add_argument("--distill", choices=DISTILL_LOSSES, default="auto",
                   help="distillation loss: kl: KL at temperature 2, on the logits a final Softmax reads; "
                        "mse: squared error on the outputs; balanced: squared error with each output channel weighted "
                        "by one over its variance (detectors mixing pixel boxes and scores); detect: binary KL on the score "
                        "rows, boxes weighted by the teacher's confidence per anchor, each part scaled to weigh alike "
                        "(YOLO-style heads); binary: binary KL per element on the logits a final Sigmoid reads; "
                        "auto (default): binary for a Sigmoid's scores, detect where the output packs score rows beside "
                        "box rows, mse for one value per row, else kl. Other float outputs are matched by relative "
                        "squared error beside it")
    p.add_argument("--select", choices=EPOCH_SELECTIONS, default="fidelity",
                   help="the epoch kept (epoch 0 included): fidelity (default): lowest held-out distillation loss; "
                        "agreement: highest held-out top-1 agreement with the teacher (what a greedy or CTC decode "
                        "reads), the loss breaking ties; parts: a packed detector head's (boxes and scores in one "
                        "output) worst per-part held-out cosine; confident: the F1 of its confident anchors agreeing "
                        "with the teacher's; with --labels, accuracy either way")


def calib_source(args):
    """The --calib argument, with image options attached when it is a folder."""
    return folder_source(args, "calib")


def folder_source(args, attr: str):
    """A data argument (--calib, --train-data), with the image options attached when it is a folder."""
    path = getattr(args, attr, None)
    if not path or not Path(path).is_dir():
        return path
    from onnxprune.score.calibration import ImageOptions  # folders are read lazily by prune
    resize = None
    if args.resize:
        try:
            h, w = (int(v) for v in args.resize.lower().split("x"))
            resize = (h, w)
            assert 1 <= h <= 16384 and 1 <= w <= 16384
        except (ValueError, AssertionError):
            raise BadInputError(f"--resize '{args.resize}': expected HxW, each from 1 to 16384") from None
    options = ImageOptions(resize=resize, mean=floats(args.mean, "--mean") or (0.0,),
                           std=floats(args.std, "--std") or (1.0,), layout=args.layout)
    return FolderSource(path, options)


class FolderSource:
    """A calibration folder with its image options, for load_calibration."""

    def __init__(self, path: str, options):
        self.path, self.options = path, options


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-vv: debug)")
