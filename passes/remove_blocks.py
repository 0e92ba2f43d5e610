"""RemoveBlocks: remove whole residual units (transformer layers or residual blocks) through
`onnxprune.prune(depth=K)`, as a pass.

    [[passes]]
    pass = "RemoveBlocks"
    depth = 2          # the 2 units whose removal changes the outputs least on the context's calib

To combine with width under one target, give ChannelPruning both: `depth = 2, target_macs = 0.5`.
"""

from __future__ import annotations

import onnx

from onnxprune import progress
from onnxprune.errors import BadInputError
from onnxprune.passes.base import Pass, PassContext, PassResult, register


@register
class RemoveBlocks(Pass):
    """Remove the `depth` residual units with the least block influence on the context's calibration
    data (synthetic inputs with a warning if it has none); no channel is pruned."""

    def __init__(self, depth: int = 1):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise BadInputError(f"pass RemoveBlocks: depth must be a positive integer, got {depth!r}")
        self.depth = depth

    def options(self) -> dict:
        return {"depth": self.depth}

    def call(self, model: onnx.ModelProto, context: PassContext) -> PassResult:
        from onnxprune.api import prune

        result = prune(model, depth=self.depth, calib=context.calib, eval_data=context.data,
                       input_shapes=context.input_shapes, seed=context.seed, threads=context.threads,
                       bench_rounds=0, progress=progress.enabled())
        fragment = {k: v for k, v in result.report.items() if k not in ("schema", "input")}
        return PassResult(result.model, True, fragment)
