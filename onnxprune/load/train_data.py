"""Training data for fine-tuning: the held-out share that picks the best epoch, and the checks that
fail in one line before any training (exit 2)."""

from __future__ import annotations

import numpy as np

from onnxprune.errors import BadInputError
from onnxprune.load.data import Dataset

HOLDOUT_SHARE = 0.1     # of the training data, when no validation data is given
HOLDOUT_MAX = 256       # samples: enough to rank epochs, cheap to evaluate every epoch
MIN_TO_SPLIT = 20       # below this every sample trains, and the epochs are ranked on the training data


def split_holdout(data: Dataset, share: float = HOLDOUT_SHARE, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held out): a random `share` of the samples (at most HOLDOUT_MAX) set aside. Small sets
    are not split: the epochs are then ranked on (up to HOLDOUT_MAX of) the training data itself."""
    n = len(data)
    count = min(HOLDOUT_MAX, int(round(n * share)))
    if n < MIN_TO_SPLIT or count < 1:
        return data, subset(data, np.arange(min(n, HOLDOUT_MAX)))
    order = np.random.default_rng(seed + 7919).permutation(n)
    return subset(data, np.sort(order[count:])), subset(data, np.sort(order[:count]))


def subset(data: Dataset, idx: np.ndarray) -> Dataset:
    from onnxprune.load.rows import Rows
    return Dataset({k: v.pick(idx) if isinstance(v, Rows) else v[idx] for k, v in data.inputs.items()},
                   None if data.labels is None else data.labels[idx], data.joinable)  # a baked batch stays one per step


def check_sample_shapes(model, data: Dataset, source: str) -> None:
    """Every sample's shape must be the input's where the model fixes it; one line naming the input and
    both shapes otherwise (ranks included, which the dimension check cannot compare)."""
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers or inp.name not in data.inputs or not inp.type.tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in inp.type.tensor_type.shape.dim]
        sample = data.inputs[inp.name].shape[1:]
        if len(sample) != len(dims) or any(w is not None and w != g for w, g in zip(dims, sample)):
            raise BadInputError(f"{source}: samples of input '{inp.name}' have shape {'x'.join(map(str, sample))}, "
                                f"the model's input '{inp.name}' takes {'x'.join(str(d or '?') for d in dims)}")
