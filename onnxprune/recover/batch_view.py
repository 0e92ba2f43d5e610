"""Training a model whose export fixed the batch at 1, several samples per step.

Many exports (ddddocr's common.onnx: input 1x1x64xW) fix the batch dimension on the inputs while the
graph itself computes every shape it needs with Shape ops, so it runs at any batch. Trained one
sample per step such a model is slow (each step pays the whole graph's overhead for one line). The
view built here declares the batch axis symbolic and, when the batch does not come out on axis 0
(ddddocr's output is time-first: T x 1 x classes), adds a Transpose that moves it there, so the
training loop can join samples on axis 0 as for any batchable model. It is used only when a run on
two samples joined reproduces each sample's own output; otherwise training stays one sample per
step. A model that batches but puts the batch on another axis of its outputs (captcha_crnn: T x N x
classes) gets the same Transpose, so the teacher's targets and the student's outputs line up per
sample. The weights keep their names, so trained values write back into the model as exported.
"""

from __future__ import annotations

import copy
import logging
from typing import Mapping

import numpy as np
import onnx
from onnx import helper

from onnxprune.load.runtime import session

log = logging.getLogger("onnxprune")
TOLERANCE = 1e-4  # relative: a batched run must match the per-sample runs to float32 rounding


def fixed_batch_inputs(model: onnx.ModelProto, names: set[str]) -> list[str]:
    """Inputs among `names` whose first axis is fixed at 1."""
    inits = {i.name for i in model.graph.initializer}
    found = []
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in names and inp.name not in inits and dims and dims[0].HasField("dim_value") \
                and dims[0].dim_value == 1:
            found.append(inp.name)
    return found


def _symbolic(model: onnx.ModelProto, inputs: list[str]) -> onnx.ModelProto:
    """A copy with the inputs' first axis symbolic and no shape claims that could pin the batch."""
    out = copy.deepcopy(model)
    for inp in out.graph.input:
        if inp.name in inputs:
            dim = inp.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = "batch"
    del out.graph.value_info[:]
    for o in out.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    return out


def batch_axes(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]],
               threads: int = 0) -> list[tuple[int, int]] | None:
    """(batch axis, rank) of each output when `model` (batch axis symbolic) run on the samples of `feeds`
    joined gives each sample's own output along one axis; None when it does not."""
    try:
        sess = session(model, threads)
        singles = [sess.run(None, dict(f)) for f in feeds]
        joined = sess.run(None, {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    except Exception as exc:  # the graph pins the batch somewhere (a Reshape constant, ...)
        log.info("batch view: the graph does not run at batch %d (%s)", len(feeds), str(exc).splitlines()[0])
        return None
    axes = []
    for k, out in enumerate(joined):
        one = singles[0][k]
        if not isinstance(out, np.ndarray) or not isinstance(one, np.ndarray):  # a ZipMap's list of maps
            log.info("batch view: output %d is not a tensor (%s)", k, type(out).__name__)
            return None
        axis = next((a for a in range(out.ndim) if out.ndim == one.ndim and one.shape[a] == 1
                     and out.shape[a] == len(feeds) and _matches(out, [s[k] for s in singles], a)), None)
        if axis is None:
            return None
        axes.append((axis, out.ndim))
    return axes


def _matches(joined: np.ndarray, singles: list[np.ndarray], axis: int) -> bool:
    expect = np.concatenate(singles, axis=axis)
    if expect.shape != joined.shape:
        return False
    scale = max(float(np.abs(expect).max()), 1.0) if expect.size else 1.0
    return bool(np.allclose(joined, expect, rtol=TOLERANCE, atol=TOLERANCE * scale))


def _batch_first(model: onnx.ModelProto, axes: list[tuple[int, int]]) -> onnx.ModelProto:
    """Outputs whose batch axis is not 0 get a Transpose moving it there (same output names)."""
    for out, (axis, rank) in zip(model.graph.output, axes):
        if axis == 0:
            continue
        inner = out.name + "__batch_later"
        for node in model.graph.node:
            node.output[:] = [inner if t == out.name else t for t in node.output]
            node.input[:] = [inner if t == out.name else t for t in node.input]
        perm = [axis] + [a for a in range(rank) if a != axis]
        model.graph.node.append(helper.make_node("Transpose", [inner], [out.name], perm=perm,
                                                 name=out.name + "__batch_first"))
        _permute_claim(out, perm)
    return model


def _permute_claim(out: onnx.ValueInfoProto, perm: list[int]) -> None:
    """The output's declared shape in the Transpose's order. Left as exported ((T, N, C) on a (N, T, C)
    tensor), ONNX Runtime unifies the two and reads N as T: captcha_crnn's loss gradient was reshaped
    to a folded (T, T, C) and every step whose batch was not T failed."""
    shape = out.type.tensor_type.shape if out.type.HasField("tensor_type") else None
    if shape is None or len(shape.dim) != len(perm):
        if shape is not None:
            out.type.tensor_type.ClearField("shape")
        return
    dims = [onnx.TensorShapeProto.Dimension() for _ in perm]
    for new, old in zip(dims, perm):
        new.CopyFrom(shape.dim[old])
    del shape.dim[:]
    shape.dim.extend(dims)


def batch_view(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]], threads: int = 0) -> onnx.ModelProto | None:
    """`model` with a symbolic batch axis and every output batch-first (`model` itself when it is so
    already), or None when the graph does not run correctly on several samples at once.
    `feeds`: two or more single samples (batch 1)."""
    if len(feeds) < 2:
        return None
    inputs = fixed_batch_inputs(model, set(feeds[0]))
    relaxed = _symbolic(model, inputs) if inputs else model
    axes = batch_axes(relaxed, feeds, threads)
    if axes is None:
        return None
    if not inputs and all(a == 0 for a, _ in axes):
        return model
    view = _batch_first(copy.deepcopy(relaxed) if relaxed is model else relaxed, axes)
    moved = [o.name for o, (a, _) in zip(model.graph.output, axes) if a]
    log.info("training several samples per step%s%s", f": the batch axis of {', '.join(inputs)} made symbolic"
             if inputs else "", f" (outputs {', '.join(moved)} transposed batch-first)" if moved else "")
    return view


__all__ = ["batch_view", "batch_axes", "fixed_batch_inputs"]
