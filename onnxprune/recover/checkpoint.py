"""Fine-tuning checkpoints: everything a killed run needs to continue exactly where its last epoch ended.

One .npz written atomically (temporary file, then rename) after every epoch: the weights, the
optimizer's moments, the best epoch's weights, the random generator's state, the step count the
learning-rate schedule reads and the history. A fingerprint of the starting weights and the run's
settings makes `--resume` refuse a checkpoint that belongs to another run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from onnxprune.errors import BadInputError

SUFFIX = ".finetune-checkpoint.npz"
# optimizer attributes that carry state across steps (AdamW: moments and step count; SGD: velocity)
_OPTIMIZER_ARRAYS = ("_m", "_v", "_velocity")
_OPTIMIZER_COUNTERS = ("t",)


def checkpoint_path(output: str | os.PathLike) -> Path:
    """Where the checkpoint of a run writing `output` lives: beside it."""
    output = Path(output)
    return output.with_name(output.name + SUFFIX)


def fingerprint(start: np.ndarray, settings: dict) -> str:
    """Digest of the starting weights and the settings that shape the run (not its length or budget)."""
    digest = hashlib.sha256(np.ascontiguousarray(start).view(np.uint8))
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` (arrays under 'arrays', JSON-able values under 'meta') atomically."""
    path = Path(path)
    arrays = {f"a/{k}": v for k, v in state["arrays"].items() if v is not None}
    arrays["meta"] = np.frombuffer(json.dumps(state["meta"], default=_plain).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, expected: str) -> dict:
    """The state `save_checkpoint` wrote; BadInputError if unreadable or written by another run."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            arrays = {k[2:]: f[k] for k in f.files if k.startswith("a/")}
    except Exception as exc:  # a truncated or foreign file is bad input, not a crash
        raise BadInputError(f"{path}: not a readable fine-tuning checkpoint ({type(exc).__name__}); delete it") from None
    if meta.get("fingerprint") != expected:
        raise BadInputError(f"{path}: checkpoint of a different run (model, data or options differ); "
                            "delete it or run without --resume")
    return {"arrays": arrays, "meta": meta}


def optimizer_state(opt) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The optimizer's state arrays and counters, read by attribute name."""
    arrays = {k: getattr(opt, k) for k in _OPTIMIZER_ARRAYS if isinstance(getattr(opt, k, None), np.ndarray)}
    return {f"opt{k}": v for k, v in arrays.items()}, {k: int(getattr(opt, k)) for k in _OPTIMIZER_COUNTERS
                                                        if hasattr(opt, k)}


def restore_optimizer(opt, arrays: dict[str, np.ndarray], counters: dict[str, int]) -> None:
    for k in _OPTIMIZER_ARRAYS:
        if f"opt{k}" in arrays and isinstance(getattr(opt, k, None), np.ndarray):
            getattr(opt, k)[...] = arrays[f"opt{k}"]
    for k, v in counters.items():
        setattr(opt, k, v)


def _plain(value):
    """JSON for numpy scalars in the history and the generator state."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
