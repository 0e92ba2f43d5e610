"""Option ranges and resource bounds, checked on the parsed command line before any work.

One message per option, naming the flag, the value and the accepted range; NaN and infinity are
refused wherever a number is expected. The bounds keep a typo from asking for terabytes: synthetic
and reshaped inputs, batches and timing rounds are capped, and --threads at this machine's cores.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from onnxprune.errors import BadInputError

MAX_INPUT_ELEMENTS = 2**26      # 256 MiB of float32 per input tensor (synthetic data, --input-shape)
MAX_BATCH = 65536
MAX_ROUNDS = 100_000
MAX_EPOCHS = 100_000


@dataclass(frozen=True)
class Range:
    """Accepted values of one option: [low, high] (open ends when the flags say so)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accepts(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        if self.high is not None and (v >= self.high if self.high_open else v > self.high):
            return False
        return True

    def text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


SHARE = Range(0, 1, low_open=True, high_open=True)
FRACTION = Range(0, 1, low_open=True)
SPARSITY = Range(0, 1, high_open=True)

# option attribute -> accepted range (the same attribute means the same thing in every command)
RANGES: dict[str, Range] = {
    "ratio": SHARE,
    "target_macs": FRACTION, "target_params": FRACTION, "target_latency": FRACTION,
    "max_layer_ratio": FRACTION,
    "min_channels": Range(1), "round_to": Range(1, 4096),
    "calib_limit": Range(1),
    "lr": Range(0, 10, low_open=True),
    "batch_size": Range(1, MAX_BATCH), "batch": Range(1, MAX_BATCH),
    "rounds": Range(1, MAX_ROUNDS), "warmup": Range(0, MAX_ROUNDS), "bench_rounds": Range(0, MAX_ROUNDS),
    "finetune": Range(0, MAX_EPOCHS), "epochs": Range(0, MAX_EPOCHS), "steps": Range(1, 100),
    "finetune_minutes": Range(0, 10**6, low_open=True), "minutes": Range(0, 10**6, low_open=True),
    "sparsity": SPARSITY, "conv_sparsity": SPARSITY, "linear_sparsity": SPARSITY,
    "zeta": Range(0, 1),
    "min_cosine": Range(-1, 1), "max_drop": Range(0, 100),
    "seed": Range(0, 2**32 - 1),
    "max_fold_mb": Range(0, 2**40, low_open=True),
}


def flag(attr: str) -> str:
    return "--" + attr.replace("_", "-")


def check_args(args: argparse.Namespace) -> None:
    """BadInputError (exit 2) for the first option out of its range, before any work."""
    for attr, accepted in RANGES.items():
        value = getattr(args, attr, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not accepted.accepts(float(value)):
            raise BadInputError(f"{flag(attr)} {value}: must be a finite number in {accepted.text()}")
    threads = getattr(args, "threads", None)
    if threads is not None and not 0 <= threads <= _cores():
        raise BadInputError(f"--threads {threads}: must be in [0, {_cores()}] (0: ONNX Runtime's default; "
                            f"this machine has {_cores()} cores)")
    for item in getattr(args, "input_shape", None) or []:
        dims = item.rpartition(":")[2].lower().split("x")
        if all(d.isdigit() for d in dims) and math.prod(int(d) for d in dims) > MAX_INPUT_ELEMENTS:
            raise BadInputError(f"--input-shape {item}: {math.prod(int(d) for d in dims):,} elements per sample is "
                                f"over the limit of {MAX_INPUT_ELEMENTS:,}; give a realistic shape")


def check_elements(shape, what: str) -> None:
    """Refuse a tensor shape too large to allocate (synthetic inputs, batches)."""
    if math.prod(int(d) for d in shape) > MAX_INPUT_ELEMENTS:
        raise BadInputError(f"{what}: shape {'x'.join(str(int(d)) for d in shape)} is over the limit of "
                            f"{MAX_INPUT_ELEMENTS:,} elements; pass a smaller --input-shape or --batch")


def check_recipe_numbers(values: dict, source: str) -> None:
    """The recipe's top-level numbers under the same bounds as the flags."""
    if values.get("threads", 0) > _cores():
        raise BadInputError(f"{source}: 'threads' = {values['threads']}: at most {_cores()} (this machine's cores)")
    if values.get("bench_rounds", 0) > MAX_ROUNDS:
        raise BadInputError(f"{source}: 'bench_rounds' = {values['bench_rounds']}: at most {MAX_ROUNDS}")
