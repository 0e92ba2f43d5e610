"""Recovery without training: re-solve the consumers of removed channels from calibration data.

For each linear op (Conv, Gemm, MatMul with a constant weight) whose input loses channels r and
keeps channels k, calibration statistics of that input give the affine map x_r ~ A x_k + b:

- `bias`:  A = 0, b = mean(x_r): the removed channels' mean contribution moves into the bias;
- `lstsq`: A, b by ridge-regularised least squares (from the channels' covariance), so the kept
           weights absorb what the removed channels carried; exact when x_r is an affine function of
           x_k (ThiNet/OBS in spirit, at the cost of one Gram matrix per layer input).

Then W[:, k] += A^T-weighted W[:, r] and bias += W[:, r] b, summed over kernel taps (exact away from
padded borders). The result is a set of replacement constants for the rewrite to slice.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.score.calibration import Statistics
from onnxprune.couple.dependency import Dependency
from onnxprune.errors import BadInputError
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.couple.ops import linear_sites
from onnxprune.couple.vocabulary import Slot

log = logging.getLogger("onnxprune")
METHODS = ("none", "bias", "lstsq")
FALLBACK_RIDGE = 0.1  # relative ridge when there are fewer calibration rows than kept channels


def add_missing_biases(model: onnx.ModelProto, input_shapes=None) -> onnx.ModelProto:
    """A copy of `model` where every Conv/Gemm that could take a bias has one (zeros), so recovery
    has somewhere to put the removed channels' mean contribution."""
    g = ModelGraph(model, input_shapes)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = set(g.constants) | set(g.producer)
    for index, site in linear_sites(g):
        if site.bias is not None or site.bias_index is None:
            continue
        weight = g.const(site.weight)
        name, k = f"{site.weight}_bias", 0
        while name in names:
            k += 1
            name = f"{site.weight}_bias_{k}"
        names.add(name)
        out.graph.initializer.append(numpy_helper.from_array(np.zeros(weight.shape[site.weight_out_axis], weight.dtype), name))
        proto = out.graph.node[index]
        while len(proto.input) < site.bias_index:
            proto.input.append("")
        if len(proto.input) == site.bias_index:
            proto.input.append(name)
        else:
            proto.input[site.bias_index] = name
    return out


def wanted_statistics(dep: Dependency, removed: np.ndarray | None, method: str) -> dict[tuple[str, int], bool]:
    """The (tensor, axis) inputs whose statistics recovery needs, and whether it needs their Gram."""
    wanted = {}
    for _, site in linear_sites(dep.graph):
        slot = Slot(site.x, site.x_axis)
        if slot in dep.slot_index and (removed is None or removed[dep.elements(slot)].any()):
            wanted[(site.x, site.x_axis)] = method == "lstsq"
    return wanted


def recover(dep: Dependency, removed: np.ndarray, stats: Statistics, method: str,
            ridge: float = 1e-4) -> dict[str, np.ndarray]:
    """Replacement values (same shapes as the dense constants) for the weights and biases of every
    consumer of removed channels."""
    if method not in METHODS:
        raise BadInputError(f"unknown recovery '{method}'; choose one of {', '.join(METHODS)}")
    g = dep.graph
    updates: dict[str, np.ndarray] = {}
    if method == "none":
        return updates
    for index, site in linear_sites(g):
        slot = Slot(site.x, site.x_axis)
        if slot not in dep.slot_index:
            continue
        gone = removed[dep.elements(slot)]
        st = stats.get(site.x, site.x_axis)
        if not gone.any() or st is None or gone.all():
            continue
        r, k = np.flatnonzero(gone), np.flatnonzero(~gone)
        lam = ridge
        if method == "lstsq" and st.count < len(k) + 1:  # the kept channels' covariance is singular
            log.warning("layer %s: %d calibration rows for %d kept input channels; ridge fallback (the removed "
                        "channels are mapped on the kept ones with a strong ridge)", g.nodes[index].name,
                        st.count, len(k))
            lam = max(ridge, FALLBACK_RIDGE)
        a, b = _affine_map(st, r, k, method, lam)
        weight = updates.get(site.weight, g.const(site.weight)).astype(np.float64)
        w = np.moveaxis(weight, site.weight_axis, 0)           # [C_in, out, taps...]
        out_axis = site.weight_out_axis - (1 if site.weight_out_axis > site.weight_axis else 0)
        w = np.moveaxis(w, out_axis + 1, 1)                    # [C_in, C_out, taps...]
        if a is not None:
            w[k] += np.tensordot(a, w[r], axes=([0], [0]))     # sum_r A[r, k] W[r] into W[k]
        bias_delta = np.tensordot(b, w[r], axes=([0], [0])).reshape(w.shape[1], -1).sum(1)
        w = np.moveaxis(np.moveaxis(w, 1, out_axis + 1), 0, site.weight_axis)
        updates[site.weight] = w.astype(g.const(site.weight).dtype)
        if site.bias is not None:
            bias = updates.get(site.bias, g.const(site.bias)).astype(np.float64)
            updates[site.bias] = (bias + bias_delta).astype(g.const(site.bias).dtype)
    return updates


def _affine_map(st, r: np.ndarray, k: np.ndarray, method: str, ridge: float):
    """(A [r, k] or None, b [r]) such that x_r ~ A x_k + b over the calibration data."""
    mean = st.mean
    cov = st.covariance() if method == "lstsq" else None
    if cov is None:
        return None, mean[r]
    ckk = cov[np.ix_(k, k)]
    ckr = cov[np.ix_(k, r)]
    lam = ridge * max(float(np.trace(ckk)) / max(len(k), 1), 1e-12)
    coef = np.linalg.solve(ckk + lam * np.eye(len(k)), ckr)    # [k, r]: x_r - mu_r ~ coef^T (x_k - mu_k)
    a = coef.T                                                 # [r, k]
    b = mean[r] - a @ mean[k]
    return a, b
