"""What a `prune` or `run` leaves behind, in one place: the model (only when every gate passed),
the JSON report (always, with the gates' outcome), the Markdown summary and the plots."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import onnx

from onnxprune.errors import BadInputError
from onnxprune.check.gates import Gate, check_thresholds, failed, raise_if_failed

log = logging.getLogger(__name__)


GATE_FLAGS = ("--min-cosine", "--max-drop")


def add_flags(p: argparse.ArgumentParser) -> None:
    """The gate, summary, plot and verbosity flags that `prune` shares with `run`."""
    p.add_argument("--min-cosine", type=float, metavar="C",
                   help="gate: exit 1 and write no model if the outputs' cosine to the dense model is below C")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="gate: exit 1 and write no model if top-1 accuracy drops more than POINTS (needs labels)")
    p.add_argument("--summary", metavar="SUMMARY.md", help="write a Markdown summary here")
    p.add_argument("--plot", metavar="DIR",
                   help="write PNG figures here (needs matplotlib: pip install 'onnxprune[plot]')")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (-vv: debug)")


def prepare(args) -> Path:
    """Every usage check on the output side of `prune`, before any work; the output path."""
    check_thresholds(args.min_cosine, args.max_drop, GATE_FLAGS)
    if args.max_drop is not None and not (getattr(args, "data", None) or getattr(args, "calib", None)):
        raise BadInputError("--max-drop needs labelled data: pass --data (or --calib) with a 'labels' array")
    return check_destinations(args.output, args.model, args.force, args.plot)


def check_destinations(output: str | os.PathLike, model: str | os.PathLike | None, force: bool,
                       plot_dir: str | os.PathLike | None = None) -> Path:
    """Usage errors before any work, by the output guard (destinations.py): an existing output without
    --force, an output that resolves to the input model or its data, --plot unusable."""
    from onnxprune.load.destinations import Destinations

    guard = Destinations(force)
    guard.input(model, "model", model=True)
    guard.claim(output, "-o", model=True)
    if plot_dir is not None:
        from onnxprune.report.plots import check_plot_dir
        check_plot_dir(plot_dir)
    return Path(output)


def deliver(report: dict, model: onnx.ModelProto, output: str | os.PathLike, gates: list[Gate], *, force: bool,
            report_path: str | os.PathLike | None = None, summary_path: str | os.PathLike | None = None,
            plot_dir: str | os.PathLike | None = None, dense: onnx.ModelProto | str | os.PathLike | None = None,
            quiet: bool = False) -> None:
    """Write the model if every gate passed, then the report, summary and plots; print the table;
    raise GateError (exit 1) naming the missed gates, after everything else is written."""
    from onnxprune.check.finite import check_finite
    from onnxprune.errors import ValidationError
    from onnxprune.load.destinations import all_or_nothing
    from onnxprune.load.files import write_json_atomic, write_text_atomic
    from onnxprune.load.model import save_model_atomic
    from onnxprune.report.formats import format_markdown, format_summary

    report["gates"] = [g.as_dict() for g in gates]
    broken = None
    if not failed(gates):
        try:  # NaN or infinite weights: never written, reported like a missed gate
            check_finite(model, dense)
        except ValidationError as exc:
            broken = exc
            report["error"] = str(exc)
    with all_or_nothing():  # a full disk half way leaves none of these outputs, not some
        if failed(gates) or broken:
            report["output"] = None
            log.info("a gate failed: %s is not written", output)
        else:
            save_model_atomic(model, output, force=force)
            report["output"] = str(output)
            log.info("wrote %s", output)
        if report_path:
            write_json_atomic(report, report_path)
            log.info("wrote the report %s", report_path)
        if summary_path:
            write_text_atomic(format_markdown(report), summary_path)
            log.info("wrote the summary %s", summary_path)
        if plot_dir:
            from onnxprune.report.plots import write_plots
            for png in write_plots(report, plot_dir, dense=dense, pruned=model):
                log.info("wrote %s", png)
    if not quiet:
        print(format_summary(report))
    raise_if_failed(gates)
    if broken:
        raise broken
