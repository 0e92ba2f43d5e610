"""Check a training graph against float64 central finite differences of the forward model.

The gradients come from the float32 training graph run in ONNX Runtime (what training uses); the
reference differences come from the forward model cast to float64 and run by onnx.reference, so
both the rules and ORT's execution of them are checked. Use it when adding a rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.autodiff.builder import build_training_graph
from onnxprune.autodiff.losses import numpy_loss
from onnxprune.autodiff.nchwc import lower_convs
from onnxprune.autodiff.weights import read_weights

_F32, _F64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
_FLOAT_ONLY = {("Resize", 1), ("Resize", 2)}  # inputs that stay float32 whatever the data type
_STASHED = {"GroupNormalization"}


@dataclass
class GradCheck:
    worst: float                                   # worst relative error over all weights
    errors: dict[str, float] = field(default_factory=dict)
    loss: float = 0.0


def check_gradients(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray] | None = None, *, loss: str = "mse",
                    target: np.ndarray | None = None, coords: int = 16, max_weights: int | None = None,
                    step: float = 1e-6, seed: int = 0, nchwc: bool = False, **loss_options) -> GradCheck:
    """Relative error max|g - fd| / max|fd| per trainable weight, on up to `coords` sampled entries each
    (and on up to `max_weights` weights picked at random). `nchwc` runs the training graph with its
    Convs on ORT's NCHWc kernels, as training does (autodiff.nchwc)."""
    rng = np.random.default_rng(seed)
    feeds = dict(feeds or {})
    shapes = {k: tuple(np.shape(v)) for k, v in feeds.items()} or None  # dynamic dims as fed, not the default
    tg = build_training_graph(model, loss=loss, input_shapes=shapes, **loss_options)
    weights = read_weights(model, tg.trainable)
    logits_shape = _output_shape(model, tg.logits, feeds)
    if target is None:
        if loss == "cross_entropy":
            target = rng.integers(0, logits_shape[-1], logits_shape[:-1]).astype(np.int64)
        else:
            target = rng.standard_normal(logits_shape).astype(np.float32)
    import onnxruntime as ort
    run = lower_convs(tg.model) if nchwc else tg.model
    sess = ort.InferenceSession(run.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run([tg.loss] + [tg.grads[w] for w in tg.trainable], {**feeds, **weights, tg.target: target})
    grads = dict(zip(tg.trainable, outs[1:]))

    double = _reference(to_double(model))
    base = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    wd = {k: v.astype(np.float64) for k, v in weights.items()}

    def value(ws: dict) -> float:
        y = double.run([tg.logits], {**base, **ws})[0]
        return numpy_loss(loss, y, target, **loss_options)

    result = GradCheck(0.0, loss=float(outs[0]))
    names = list(tg.trainable)
    if max_weights is not None and len(names) > max_weights:
        names = [names[i] for i in sorted(rng.choice(len(names), max_weights, replace=False))]
    for name in names:
        w = wd[name]
        picks = rng.choice(w.size, size=min(coords, w.size), replace=False)
        fd = np.empty(len(picks))
        for k, flat in enumerate(picks):
            h = step * max(1.0, abs(w.flat[flat]))
            plus, minus = w.copy(), w.copy()
            plus.flat[flat] += h
            minus.flat[flat] -= h
            fd[k] = (value({**wd, name: plus}) - value({**wd, name: minus})) / (2 * h)
        got = grads[name].reshape(-1)[picks].astype(np.float64)
        err = float(np.max(np.abs(got - fd)) / max(np.max(np.abs(fd)), 1e-6))
        result.errors[name] = err
        result.worst = max(result.worst, err)
    return result


def to_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model computing in float64 (initializers, Constants, Casts and declared types)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep32 = {n.input[i] for n in out.graph.node for op, i in _FLOAT_ONLY if n.op_type == op and len(n.input) > i}
    for i, init in enumerate(out.graph.initializer):
        if init.data_type == _F32 and init.name not in keep32:
            value = numpy_helper.to_array(init).astype(np.float64)
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, init.name))
    for node in out.graph.node:
        if node.op_type in _STASHED:  # compute the statistics in float64 too (the default stash is float32)
            kept = [a for a in node.attribute if a.name != "stash_type"]
            del node.attribute[:]
            node.attribute.extend(kept + [helper.make_attribute("stash_type", _F64)])
        for a in node.attribute:
            if a.name == "to" and a.i == _F32:
                a.i = _F64
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == _F32 and node.output[0] not in keep32:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
            if node.op_type == "Constant" and a.name in ("value_float", "value_floats"):
                value = np.asarray(a.f if a.name == "value_float" else list(a.floats), dtype=np.float64)
                a.CopyFrom(helper.make_attribute("value", numpy_helper.from_array(value)))
    for vi in list(out.graph.input) + list(out.graph.output) + list(out.graph.value_info):
        if vi.type.tensor_type.elem_type == _F32:
            vi.type.tensor_type.elem_type = _F64
    return out


def _output_shape(model, name, feeds) -> tuple[int, ...]:
    return tuple(_reference(model).run([name], dict(feeds))[0].shape)


def _reference(model: onnx.ModelProto):
    """onnx.reference with two fixes (onnx 1.23): Erf computed in the input's precision (its own
    rounds to float32, turning finite differences through Erf/GELU into noise; Gelu likewise), and grouped
    ConvTranspose run group by group (its own breaks with more than one output channel per group));
    ONNX Runtime's contrib ops (Attention, SkipLayerNormalization, ...) from reference_ops."""
    import math

    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_conv_transpose import ConvTranspose as _ConvTranspose

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x):
            return (np.vectorize(math.erf, otypes=[x.dtype])(x),)

    class Gelu(OpRun):  # a function op: its body would use the float32 Erf
        op_domain = ""

        def _run(self, x, approximate="none"):
            if approximate == "tanh":
                inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
                return ((0.5 * x * (1 + np.tanh(inner))).astype(x.dtype),)
            cdf = 0.5 * (1 + np.vectorize(math.erf, otypes=[x.dtype])(x / math.sqrt(2)))
            return ((x * cdf).astype(x.dtype),)

    class ConvTranspose(_ConvTranspose):
        op_domain = ""

        def _run(self, X, W, B=None, group=None, **attrs):
            if not group or group == 1:
                return super()._run(X, W, B, group=1, **attrs)
            parts = [super(ConvTranspose, self)._run(x, w, None, group=1, **attrs)[0]
                     for x, w in zip(np.split(X, group, axis=1), np.split(W, group, axis=0))]
            y = np.concatenate(parts, axis=1)
            if B is not None:
                y = y + B.reshape((1, -1) + (1,) * (y.ndim - 2))
            return (y.astype(X.dtype),)

    from onnxprune.autodiff.reference_ops import CONTRIB_OPS
    return ReferenceEvaluator(model, new_ops=[Erf, Gelu, ConvTranspose, *CONTRIB_OPS])
