"""The depth stage `prune()` runs before width pruning when `depth` is given:

    step = remove_depth_first(model, options, calib)   the K least influential residual units removed
    prep = prepare(step.model, step.options, step.data)  width pruning then runs on the shallower model

A MACs or parameter target counts the depth removal: the width stage is asked for what is left of
it (target / kept-by-depth), and nothing when depth alone already meets it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import onnx

from onnxprune.graph.model_graph import ModelGraph
from onnxprune.load.data import Dataset
from onnxprune.load.fit import check_fits
from onnxprune.load.fold import fold_constants
from onnxprune.load.spill import model_bytes
from onnxprune.options import PruneOptions, Target, with_defaults
from onnxprune.select.depth import remove_depth
from onnxprune.stages import as_dataset, as_model

log = logging.getLogger("onnxprune")


@dataclass
class DepthStep:
    """The dense model as given, the model without the removed units, the options for the width
    stage, the calibration data as loaded, and the report's `depth` fragment."""

    dense: onnx.ModelProto
    source: str
    dense_bytes: int
    model: onnx.ModelProto
    options: PruneOptions
    data: Dataset | None
    report: dict


def remove_depth_first(model_or_path, options: PruneOptions, calib=None) -> DepthStep:
    """Remove `options.target.depth` residual units chosen on `calib` (synthetic inputs if None)."""
    dense, source = as_model(model_or_path)
    data = as_dataset(calib, dense, options.calib_limit, options.input_shapes)
    if data is not None:  # named as the user gave it: the path, else the flag
        check_fits(dense, data, str(calib) if isinstance(calib, (str, os.PathLike)) else "--calib")
    shapes = options.input_shapes if options.input_shapes is not None or data is None else data.sample_shapes()
    graph = ModelGraph(fold_constants(dense), shapes)
    result = remove_depth(graph, options.target.depth, data, options.threads_capped())
    report = result.report
    width = _width_target(options.target, report)
    report["width_target"] = (None if width.kind == "depth"
                              else {width.kind: width.value if width.kind != "plan" else "given"})
    if width.kind == "depth":  # nothing left for width pruning: no statistics, no recovery
        options = with_defaults(options, criterion="l2", scope="local", recover="none")
    return DepthStep(dense, source, model_bytes(dense), result.model, replace(options, target=width), data, report)


def _width_target(target: Target, report: dict) -> Target:
    """The width stage's target: a MACs/params fraction of the dense model becomes a fraction of the
    shallower one; ratio and plan stay as given."""
    kind = target.kind
    if kind not in ("macs", "params"):
        return target
    left = target.value / report[f"{kind}_kept"]
    if left >= 1.0:
        log.warning("--depth %d alone keeps %.3f of the %s (target %.3f): no width pruning", target.depth,
                    report[f"{kind}_kept"], "MACs" if kind == "macs" else "parameters", target.value)
        return Target(depth=target.depth)
    return Target(**{kind: left}, depth=target.depth)
