"""Passes users compose into pipelines, and the registry recipes name them by.

    from onnxprune.passes import ChannelPruning, Pipeline, PassContext, Validate
    result = Pipeline([ChannelPruning(0.3), Validate(min_cosine=0.98)]).run(model, PassContext(dense=model))

A new pass is a class with `@register` in a module of this package; it is found by name at once.
A Pipeline is a pass too (pipelines nest). `onnxprune.passes.onnx_ir_adapter.as_ir_pass` runs any
pass inside an onnx_ir.passes.PassManager (needs the `ir` extra).
"""

from onnxprune.passes.base import (PASSES, Pass, PassContext, PassError, PassResult, available, create_pass, get_pass,
                                   register)
from onnxprune.passes.channel_pruning import ChannelPruning
from onnxprune.passes.finetune import FineTune
from onnxprune.passes.pipeline import Pipeline, PipelineResult
from onnxprune.passes.quantize import Quantize
from onnxprune.passes.remove_blocks import RemoveBlocks
from onnxprune.passes.sparsify import Sparsify
from onnxprune.passes.validation import Validate

__all__ = ["Pass", "PassContext", "PassResult", "PassError", "PASSES", "register", "get_pass", "create_pass",
           "available", "Pipeline", "PipelineResult", "ChannelPruning", "RemoveBlocks", "FineTune", "Quantize",
           "Sparsify", "Validate"]
