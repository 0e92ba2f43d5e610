"""Channels the calibration data cannot judge: encodings of the input itself.

A channel axis computed from the graph inputs without any learned weight (magika's one-hot of each
byte: Equal against a constant range, then Cast, into the first MatMul) holds features of the data,
not of the model. 32 calibration files exercise only some of the 257 byte values; every data-aware
score gives the unseen ones zero, and global selection removed 97% of them at 0.9 of the MACs, which
took magika from 89.7 to 38.9 on other files (a cliff, then a recovery at 0.5). A data-free criterion
is no better placed: it ranks the byte values by the norm of the embedding rows that read them, which
says nothing of how often a value occurs, and the target search's last steps cut the 257 values to 12%
at 0.8 of the MACs (magika 25.7, against 87.4 at 0.5 where the plan happened to keep 90%). Such groups
are left whole by every selection.
"""

from __future__ import annotations

import numpy as np

from onnxprune.couple.dependency import Dependency
from onnxprune.graph.constants import sizes


def input_derived(dep: Dependency) -> set[str]:
    """Tensors computed from the graph inputs through ops that read no learned weight (a float
    constant of more than one element), such as Cast, Reshape, Expand, Equal, OneHot."""
    g = dep.graph
    learned = {name for name, shape, dtype in sizes(g.constants)
               if np.issubdtype(dtype, np.floating) and int(np.prod(shape)) > 1}
    derived = set(g.inputs)
    for node in g.nodes:  # ONNX lists nodes in topological order
        inputs = [t for t in node.inputs if t]
        if any(t in learned for t in inputs):
            continue
        if any(t in derived for t in inputs) and all(t in derived or g.is_const(t) for t in inputs):
            derived.update(t for t in node.outputs if t)
    return derived


def input_encoded_groups(dep: Dependency) -> set[int]:
    """Prunable groups with a slot on an input-derived tensor."""
    derived = input_derived(dep)
    return {grp.id for grp in dep.groups
            if grp.prunable > 0 and any(s.tensor in derived for s in grp.slots)}

