"""Op rules, one small declaration per op family, registered by op type in REGISTRY."""

from onnxprune.couple.ops import conv, elementwise, linear, misc, norm, pool, recurrent, shape_ops  # noqa: F401  (registration)
from onnxprune.couple.vocabulary import REGISTRY, Barrier, Link, Rule, Slot

__all__ = ["REGISTRY", "Barrier", "Link", "Rule", "Slot"]
