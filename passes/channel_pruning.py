"""ChannelPruning: structured channel removal through `onnxprune.prune`, as a pass."""

from __future__ import annotations

import onnx

from onnxprune import progress
from onnxprune.errors import BadInputError
from onnxprune.options import keyword_names
from onnxprune.passes.base import Pass, PassContext, PassResult, register, shape_table

# prune() option <- context attribute, used unless the pass sets the option itself
_FROM_CONTEXT = {"calib": "calib", "eval_data": "data", "input_shapes": "input_shapes", "seed": "seed",
                 "threads": "threads"}


def prune_options() -> set[str]:
    """The keyword options `onnxprune.prune` accepts (its option keywords and its data sources)."""
    return keyword_names() | {"calib", "eval_data", "train_data", "val_data"}


@register
class ChannelPruning(Pass):
    """Remove channels: `ratio` (or a target such as target_macs), plus any option of onnxprune.prune
    (criterion, scope, round_to, recover, exclude, ...). Latency is not measured inside the pass
    (bench_rounds 0) unless asked; the pipeline measures the final model once."""

    def __init__(self, ratio: float | None = None, **options):
        known = prune_options()
        unknown = sorted(set(options) - known)
        if unknown:
            raise BadInputError(f"pass ChannelPruning: unknown option(s) {', '.join(unknown)}; "
                                f"known: ratio, {', '.join(sorted(known))}")
        if "input_shapes" in options:
            options["input_shapes"] = shape_table(options["input_shapes"], "pass ChannelPruning: input_shapes")
        self.ratio = ratio
        self.prune_options = dict(options)

    def options(self) -> dict:
        return {"ratio": self.ratio, **self.prune_options} if self.ratio is not None else dict(self.prune_options)

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        from onnxprune.api import prune

        known = prune_options()
        opts = dict(self.prune_options)
        opts.setdefault("bench_rounds", 0)
        for key, attr in _FROM_CONTEXT.items():
            value = getattr(context, attr)
            if key in known and value is not None and key not in opts:
                opts[key] = value
        if "progress" in known:
            opts.setdefault("progress", progress.enabled())
        result = prune(model, self.ratio, **opts)
        fragment = {k: v for k, v in result.report.items() if k not in ("schema", "input")}
        changed = bool(result.plan.removed.any()) or bool(result.report.get("depth"))  # depth = K removes units
        return PassResult(result.model, changed, fragment)
