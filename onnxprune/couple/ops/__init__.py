"""Op rules, one small declaration per op family. Each module lists its rules in `RULES`; MODULES names
every module, and REGISTRY maps each op to its rule: a standard op by its type ("MatMul"), an op of
another domain by domain and type ("com.microsoft.Attention"). A new op family is one file here and
one entry in MODULES."""

from onnxprune.couple.ops import (attention, conv, elementwise, fused, linear, misc, nbits, norm, pool, recurrent,
                                  shape_ops, slicing, stream)
from onnxprune.couple.vocabulary import Barrier, LinearSite, Link, Rule, Slot
from onnxprune.graph.model_graph import ModelGraph, Node

STANDARD = ("", "ai.onnx")


def op_key(domain: str, op: str) -> str:
    """The REGISTRY key of an op: its type in the standard domain, "domain.type" in any other."""
    return op if domain in STANDARD else f"{domain}.{op}"


MODULES = (attention, conv, elementwise, fused, linear, misc, nbits, norm, pool, recurrent, shape_ops, slicing,
           stream)
REGISTRY: dict[str, Rule] = {op_key(rule.domain, op): rule for module in MODULES for rule in module.RULES
                             for op in rule.ops}


def rule_for(node: Node) -> Rule | None:
    """The rule of `node`'s op in its domain; an op without one is a barrier."""
    return REGISTRY.get(op_key(node.proto.domain, node.op))


def linear_sites(g: ModelGraph) -> list[tuple[int, LinearSite]]:
    """(node index, site) for every op computing W x with a constant W and a computed x."""
    sites = []
    for node in g.nodes:
        rule = rule_for(node)
        site = rule.linear_site(g, node) if rule is not None else None
        if site is not None and not g.is_const(site.x):
            sites.append((node.index, site))
    return sites


__all__ = ["REGISTRY", "MODULES", "Barrier", "Link", "Rule", "Slot", "rule_for", "linear_sites"]
