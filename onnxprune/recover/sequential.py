"""Sequential reconstruction: re-solve every linear consumer downstream of a pruned channel so that,
fed the PRUNED model's activations, it reproduces the DENSE model's output at that point.

One-shot recovery (recover.py) solves each consumer from the dense model's statistics, so the error a
consumer leaves behind reaches the next one uncorrected and errors compound. Here consumers are solved
in topological waves (longest-path layers of the consumer graph: a wave's inputs depend only on
consumers already solved). Both models are streamed over the calibration data a segment per wave
(score/stream.py): for wave k the pruned model runs only the nodes between wave k-1 and wave k (with
the weights just solved swapped in) and the dense model the matching segment, each reading the tensors
earlier segments left behind, so every node runs once per sample (time linear in nodes and samples).
The normal equations X_p^T X_p and X_p^T Y_d are accumulated batch by batch (float32 products summed
in float64). Memory is one batch of one segment plus the stored frontier (spilled to disk past a
budget) and one Gram matrix per consumer of the wave, never every activation at once.

Two solves:
- `output`: Conv (group 1, 1-D/2-D), Gemm, MatMul with a constant weight. Features are the kept input
  channels (for a conv at every kernel tap, F = C_kept * kh * kw, taken at random output positions so
  no im2col of the whole map is ever built; rows per layer ~ max(4 F, 8192), enough for a well-posed
  F-dimensional least squares at a cost of rows * F^2); the target is the dense layer's output.
- `channel`: ConvTranspose, LSTM/GRU input weights, convs with F > MAX_FEATURES (a MatMul/Gemm may
  have up to MAX_LINEAR_FEATURES: one tap, and its output has fewer sides to solve). The dense input
  channels are regressed on the kept pruned ones (x_d ~ A x_p + b) and the map is folded into the
  weight, shared by every kernel tap (exact for 1x1, the usual approximation otherwise).

Ridge pulls toward the dense weights (not toward zero), its strength chosen on held-out batches
(ridge_choice.py); fewer calibration rows than features logs a warning naming the layer, and such a
layer (a classifier seeing one row per image) is solved in the rows' space (few_rows.py), without its
Gram. Solving and writing back: layer_solve.py.
BatchNormalization kept by an export sits after its conv, whose pre-norm output is what is matched, so
its statistics stay valid; depthwise convs follow their group and are compensated at the next dense
layer, whose input is then the pruned depthwise output.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from onnxprune.load.data import Dataset
from onnxprune.couple.dependency import Dependency
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.couple.ops import REGISTRY
from onnxprune.couple.vocabulary import LinearSite, Slot
from onnxprune.couple.plan import Plan
from onnxprune.score.passplan import BATCH_BYTES  # the largest wave tensor of one batch, as for statistics
from onnxprune.score.stream import Streamer, level_segments
from onnxprune.recover import few_rows, logit_weights
from onnxprune.recover.layer_solve import RECURRENT, solve_consumer
from onnxprune.recover.ridge_choice import add_held, held_out, products
from onnxprune.recover.sliced import constant_cuts, cut_into
from onnxprune.recover.waves import topological_waves

log = logging.getLogger("onnxprune")

MAX_FEATURES = 2400      # per-tap features of one conv (a 256-channel 3x3 conv fits); above: channel solve
MAX_LINEAR_FEATURES = 8192  # MatMul/Gemm inputs solved for the output (a 512 MB Gram); not 8,192 channel-solve sides
MAX_CHANNEL_SIDE = 8192  # channel-solve inputs (dense or kept) past which a layer is left sliced: a 512 MB Gram
MIN_ROWS = 8192          # rows sampled per layer at least (cheap layers get a well-posed problem)
ROWS_PER_FEATURE = 4     # and at least this many per feature


@dataclass
class Consumer:
    """One linear layer to re-solve and the running sums of its normal equations."""

    node: int
    name: str
    site: LinearSite
    kind: str                      # "output" or "channel"
    kept_in: np.ndarray            # kept indices of the contracted (input) axis
    kept_out: np.ndarray           # kept indices of the output axis (all for a channel solve)
    target: str                    # dense tensor fetched: the layer's output, or its input for "channel"
    conv: dict | None = None       # kernel geometry for a per-tap conv solve
    intercept: bool = True
    gram: np.ndarray | None = None
    cross: np.ndarray | None = None
    rows: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def features(self) -> int:
        taps = int(np.prod(self.conv["kernel"])) if self.conv else 1
        return len(self.kept_in) * taps


def reconstruct(dep: Dependency, removed: np.ndarray, data: Dataset, ridge: float = 1e-2, batch_size: int = 8,
                max_samples: int | None = None, seed: int = 0, progress: bool = False, direct_only: bool = False,
                initial: dict[str, np.ndarray] | None = None,
                presliced: dict[str, np.ndarray] | None = None, logit_weighted: bool = False) -> dict[str, np.ndarray]:
    """Replacement values (dense shapes) for the weights and biases of every linear layer downstream
    of a removed channel, solved wave by wave on the pruned-so-far model (see the module doc).

    `direct_only` re-solves only the layers that lose input channels (enough to measure one group's
    damage). `initial`: dense-shaped values set before the first wave (norms).
    `presliced`: solved values go there cut instead (for apply_plan), never held dense and sliced at
    once; a SpilledArrays (spilled.py) keeps them on disk, so they never add up in memory.
    `logit_weighted`: the layers giving an output Sigmoid's logits are fit weighted (logit_weights.py)."""
    g, data = dep.graph, data.take(max_samples) if max_samples else data
    consumers = _consumers(dep, removed)
    if direct_only:
        consumers = [c for c in consumers if len(c.kept_in) < g.const(c.site.weight).shape[c.site.weight_axis]]
    if not consumers:
        return dict(initial or {})
    from onnxprune.apply.rewrite import apply_plan
    if logit_weighted:
        marked = logit_weights.mark(g.model, consumers, data.batch(0, 1))
        log.info("logit-weighted re-solve of %s", ", ".join(marked) or "no layer")
    waves = topological_waves(g, consumers)
    outs = {g.nodes[c.node].outputs[0] for c in consumers}
    pruned_model = apply_plan(Plan(dep, removed))  # the structure; re-solved weights are swapped in per wave
    inputs = [sorted({c.site.x for c in wave}) for wave in waves]
    targets = [sorted({c.target for c in wave}) for wave in waves]
    biggest = max(4 * int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in g.shape(t) or ()]))
                  for t in set().union(*inputs, *targets))  # bytes per sample: a 640x640 map gets fewer per batch
    batch_size = int(np.clip(BATCH_BYTES // max(biggest, 1), 1, batch_size))
    pruned = Streamer(pruned_model, level_segments(pruned_model, outs, set().union(*inputs), len(waves)), inputs,
                      data, batch_size)
    dense = Streamer(g.model, level_segments(g.model, outs, set().union(*targets), len(waves) + 1), [[]] + targets,
                     data, batch_size)
    cuts = constant_cuts(dep, removed)
    overrides = dict(initial or {})  # dense-shaped solutions; `replace`: the same, sliced as the pruned model holds them
    replace = presliced if presliced is not None else {}
    cut_into(list(overrides), overrides, replace, cuts, move=presliced is not None)
    from tqdm import tqdm
    steps = tqdm(range(len(waves)), desc="reconstruction", leave=False, disable=not progress)
    try:
        deque(dense.run(), maxlen=0)  # segment 0 of the dense model: what precedes every re-solved layer
        for w in steps:
            wave = waves[w]
            xs_run, ys_run = pruned.run(replace), dense.run()
            for (b, share, xs), (_, _, ys) in zip(xs_run, ys_run):
                for c in wave:
                    _accumulate(c, np.asarray(xs[c.site.x]), np.asarray(ys[c.target]), share, seed + 7919 * b + c.node,
                                held_out(b))
            deque(ys_run, maxlen=0)  # both runs cover the same batches; finish the generator's bookkeeping
            for c in wave:
                solve_consumer(g, c, overrides, ridge)  # frees the sums: the next wave needs only the solutions
                cut_into((c.site.weight, c.site.bias), overrides, replace, cuts, move=presliced is not None)
    finally:
        pruned.close()
        dense.close()
    return overrides


# ---- which layers, in which order --------------------------------------------------------------

def _site(g: ModelGraph, node) -> LinearSite | None:
    rule = REGISTRY.get(node.op) if node.proto.domain in ("", "ai.onnx") else None
    site = rule.linear_site(g, node) if rule is not None else None
    if site is None and node.op in RECURRENT and g.is_const(node.input(1)):
        axis, _ = RECURRENT[node.op]  # only the input weights W: the recurrence R sees hidden units
        bias = node.input(3) if g.is_const(node.input(3)) else None
        site = LinearSite(node.inputs[0], 2, node.inputs[1], axis, 1, bias, None)  # X's features: axis 2 in both layouts
    if site is None or g.is_const(site.x):
        return None
    return site


def _kept(dep: Dependency, removed: np.ndarray, tensor: str, axis: int, size: int) -> np.ndarray:
    slot = Slot(tensor, axis)
    if slot not in dep.slot_index:
        return np.arange(size)
    return np.flatnonzero(~removed[dep.elements(slot)])


def _changed_tensors(dep: Dependency, removed: np.ndarray) -> set[str]:
    """Activations whose values (or widths) differ between the dense and the pruned model."""
    g = dep.graph
    changed = {s.tensor for s in dep.slots if removed[dep.elements(s)].any()}
    for node in g.nodes:
        if changed.intersection(node.inputs):
            changed.update(t for t in node.outputs if t)
    return {t for t in changed if t not in g.constants}


def _consumers(dep: Dependency, removed: np.ndarray) -> list[Consumer]:
    g = dep.graph
    changed = _changed_tensors(dep, removed)
    uses: dict[str, int] = {}
    for node in g.nodes:
        for t in node.inputs:
            uses[t] = uses.get(t, 0) + 1
    out = []
    for node in g.nodes:
        site = _site(g, node)
        if site is None or site.x not in changed or uses.get(site.weight, 0) != 1:
            continue  # unchanged input: slicing output rows is exact; shared weights: one solve can't serve both
        weight = g.const(site.weight)
        kept_in = _kept(dep, removed, site.weight, site.weight_axis, weight.shape[site.weight_axis])
        kept_out = _kept(dep, removed, site.weight, site.weight_out_axis, weight.shape[site.weight_out_axis])
        if len(kept_in) == 0 or len(kept_out) == 0:
            continue
        conv = _conv_geometry(g, node) if node.op == "Conv" else None
        kind = "output"
        if node.op in ("ConvTranspose",) + tuple(RECURRENT) or (node.op == "Conv" and conv is None):
            kind = "channel"
        c = Consumer(node.index, node.name, site, kind, kept_in, kept_out, node.outputs[0], conv,
                     intercept=site.bias is not None)
        if kind == "output" and c.features > (MAX_FEATURES if conv is not None else MAX_LINEAR_FEATURES):
            kind = "channel"
        if kind == "channel" and max(len(kept_in), weight.shape[site.weight_axis]) > MAX_CHANNEL_SIDE:
            log.info("layer %s: %d inputs, too wide to re-solve in bounded memory; left as sliced",
                     node.name, weight.shape[site.weight_axis])  # VGG-19's 25,088-input Gemm: a 4.7 GB Gram
            continue
        if kind == "channel":
            c.kind, c.conv, c.target, c.kept_out = "channel", None, site.x, np.arange(weight.shape[site.weight_out_axis])
            c.intercept = site.bias is not None
        elif node.op == "MatMul" and site.bias is not None:
            c.extra["bias"] = g.const(site.bias)  # the Add after the MatMul: part of the dense target
        c.extra["few"] = few_rows.RowStore(c.features + (1 if c.intercept else 0))  # rows kept while few
        out.append(c)
    return out


# ---- conv geometry and features -----------------------------------------------------------------

def _conv_geometry(g: ModelGraph, node) -> dict | None:
    """Kernel, strides, dilations and leading pads of a 1-D/2-D group-1 Conv (None: solve per channel)."""
    w = g.const(node.inputs[1])
    x_shape, y_shape = g.shape(node.inputs[0]), g.shape(node.outputs[0])
    if w.ndim not in (3, 4) or x_shape is None or y_shape is None:
        return None
    nd = w.ndim - 2
    kernel = tuple(int(k) for k in w.shape[2:])
    strides = tuple(int(s) for s in node.attrs.get("strides", [1] * nd))
    dil = tuple(int(d) for d in node.attrs.get("dilations", [1] * nd))
    auto = node.attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    begin = []
    for i in range(nd):
        size_in, size_out = x_shape[2 + i], y_shape[2 + i]
        total = max((size_out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - size_in, 0)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            begin.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        elif auto == "VALID":
            begin.append(0)
        else:
            begin.append(int(node.attrs.get("pads", [0] * (2 * nd))[i]))
    if nd == 1:  # a 1-D conv is a 2-D conv of height 1
        kernel, strides, dil, begin = (1,) + kernel, (1,) + strides, (1,) + dil, [0] + begin
    return {"kernel": kernel, "strides": strides, "dilations": dil, "begin": begin, "nd": nd}


def _conv_rows(c: Consumer, x: np.ndarray, y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-tap features of x at sampled output positions, and y there: ([rows, C*kh*kw], [rows, M])."""
    geo = c.conv
    if geo["nd"] == 1:
        x, y = x[:, :, None], y[:, :, None]
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = geo["kernel"], geo["strides"], geo["dilations"], geo["begin"]
    ho, wo = y.shape[2], y.shape[3]
    per_image = max(MIN_ROWS, ROWS_PER_FEATURE * c.features) * share / max(x.shape[0], 1)
    count = min(ho * wo, int(np.ceil(per_image)))
    rng = np.random.default_rng(seed)
    flat = rng.choice(ho * wo, size=count, replace=False) if count < ho * wo else np.arange(ho * wo)
    oi, oj = flat // wo, flat % wo
    need_h = (ho - 1) * sh + (kh - 1) * dh + 1
    need_w = (wo - 1) * sw + (kw - 1) * dw + 1
    pad = ((0, 0), (0, 0), (ph, max(need_h - x.shape[2] - ph, 0)), (pw, max(need_w - x.shape[3] - pw, 0)))
    xp = np.pad(x, pad)
    taps = [xp[:, :, oi * sh + i * dh, oj * sw + j * dw] for i in range(kh) for j in range(kw)]  # each [B, C, P]
    feats = np.stack(taps, axis=2)                                   # [B, C, T, P]
    feats = feats.transpose(0, 3, 1, 2).reshape(-1, x.shape[1] * kh * kw)
    target = y[:, c.kept_out][:, :, oi, oj].transpose(0, 2, 1).reshape(-1, len(c.kept_out))
    return feats.astype(np.float32, copy=False), target.astype(np.float32, copy=False)


def _rows(c: Consumer, x: np.ndarray, y: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, targets) of one batch; `share` is the batch's fraction of the calibration samples."""
    site = c.site
    if c.kind == "output" and c.conv is not None:
        return _conv_rows(c, x, y, share, seed)
    feats = np.moveaxis(x, site.x_axis, -1).reshape(-1, x.shape[site.x_axis])
    if c.kind == "channel":
        target = np.moveaxis(y, site.x_axis, -1).reshape(-1, y.shape[site.x_axis])
    else:
        out_axis = 1 if c.extra.get("gemm", False) or y.ndim == 2 else y.ndim - 1
        target = np.moveaxis(y, out_axis, -1).reshape(-1, y.shape[out_axis])[:, c.kept_out]
        if "bias" in c.extra:
            target = target + c.extra["bias"][c.kept_out]
    cap = int(np.ceil(4 * max(MIN_ROWS, ROWS_PER_FEATURE * feats.shape[1]) * share))
    if feats.shape[0] > cap:  # long sequences or large maps: sample positions, as for convs
        idx = np.random.default_rng(seed).choice(feats.shape[0], cap, replace=False)
        feats, target = feats[idx], target[idx]
    return feats.astype(np.float32, copy=False), target.astype(np.float32, copy=False)


def _accumulate(c: Consumer, x: np.ndarray, y: np.ndarray, share: float, seed: int, held: bool = False) -> None:
    if c.extra.get("skip"):
        return
    if x.shape[c.site.x_axis] != len(c.kept_in):  # the rewrite did not slice this input as the plan says
        log.warning("layer %s: pruned input has %d channels, expected %d; not re-solved", c.name,
                    x.shape[c.site.x_axis], len(c.kept_in))
        c.extra["skip"], c.gram = True, None
        return
    feats, target = _rows(c, x, y, share, seed)
    if c.intercept:
        feats = np.concatenate([feats, np.ones((feats.shape[0], 1), feats.dtype)], axis=1)
    store = c.extra.get("few")
    if store is not None:
        if store.add(feats, target, held):
            return
        del c.extra["few"]  # as many rows as features: into the Gram, in the order they came
        for kept in store.batches:
            _add_sums(c, *kept)
    _add_sums(c, feats, target, held)


def _add_sums(c: Consumer, feats: np.ndarray, target: np.ndarray, held: bool) -> None:
    if logit_weights.KEY in c.extra:  # weighted sums of the logit columns, beside the plain ones
        logit_weights.add(c.extra, feats, target, held)
    if held:  # rows that choose the ridge (ridge_choice.py), added to the fit afterwards
        return add_held(c.extra, feats, target)
    if c.gram is None:
        c.gram = np.zeros((feats.shape[1], feats.shape[1]))
        c.cross = np.zeros((feats.shape[1], target.shape[1]))
    gram, cross = products(feats, target)  # float32 products of one batch (BLAS sgemm), summed in float64
    c.gram += gram
    c.cross += cross
    c.rows += feats.shape[0]
