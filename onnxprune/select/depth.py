"""Depth: choose the K residual units (transformer layers or single blocks, graph/residual.py) whose
removal changes the outputs least, and remove them (apply/remove_blocks.py).

Ranking is ShortGPT's block influence, 1 - cos(h_in, h_out) between the hidden state before and after
the unit, averaged over positions (the feature axis is the last one for sequences, axis 1 for NCHW
maps) and calibration samples: a unit that barely turns the hidden state does little. The choice is
then confirmed by measurement, greedily: K times, the 3 least influential units left are each removed
(with those already chosen), the model's outputs compared with the dense ones, and the one with the
highest output cosine goes. Influence is computed once, on the dense model, as ShortGPT does.

Without calibration data the scores come from synthetic inputs, with a warning: they rank units of a
model on inputs it never sees, so `--calib` is what makes the choice meaningful.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.apply.remove_blocks import remove_blocks
from onnxprune.check.fidelity import compare
from onnxprune.errors import BadInputError
from onnxprune.graph.constants import sizes
from onnxprune.graph.cost import count_macs, count_params
from onnxprune.graph.fused_residual import refuse, unfuse
from onnxprune.graph.model_graph import ModelGraph
from onnxprune.graph.residual import Unit, units
from onnxprune.load.data import Dataset, synthetic_dataset
from onnxprune.load.runtime import session

log = logging.getLogger("onnxprune")
SCORE_SAMPLES = 32  # calibration samples the influence and the confirming fidelity runs use
SHORTLIST = 3  # units measured at each greedy step, least influential first


@dataclass
class DepthResult:
    """The model without the chosen units, and the report's `depth` fragment."""

    model: onnx.ModelProto
    report: dict


def _rows(value: np.ndarray) -> np.ndarray:
    """(positions, features): sequences (B, S, H) by their last axis, maps (N, C, ...) by axis 1."""
    value = value.astype(np.float64)
    if value.ndim >= 4:
        value = np.moveaxis(value, 1, -1)
    return value.reshape(-1, value.shape[-1])


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _rows(a), _rows(b)
    norms = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    cos = np.where(norms > 0, (ra * rb).sum(1) / np.maximum(norms, 1e-300), 1.0)
    return float(cos.mean())


def block_influence(g: ModelGraph, candidates: list[Unit], data: Dataset, threads: int = 0) -> list[float]:
    """1 - mean cosine between each unit's input and output hidden states over `data`."""
    names = list(dict.fromkeys(t for u in candidates for t in (u.skip, u.output) if t not in g.inputs))
    probe = onnx.ModelProto()
    probe.CopyFrom(g.model)
    listed = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in listed)
    sess = session(probe, threads)
    fetched = [o.name for o in sess.get_outputs()]
    sums = np.zeros(len(candidates))
    for feed in data.batches(1, False):
        values = dict(zip(fetched, sess.run(None, feed)))
        values.update(feed)
        sums += [_cosine_rows(values[u.skip], values[u.output]) for u in candidates]
    return [float(1.0 - s / max(len(data), 1)) for s in sums]


def _disjoint(chosen: list[Unit], unit: Unit) -> bool:
    return all(not (unit.nodes & other.nodes) for other in chosen)


def choose_units(g: ModelGraph, candidates: list[Unit], depth: int, data: Dataset,
                 dense, threads: int = 0) -> tuple[list[int], list[dict]]:
    """Indices of the `depth` units to remove, in the order chosen, and a row per candidate.

    Greedy: at each step the SHORTLIST least influential units left are each removed together with
    those chosen before, the model's outputs are compared with the dense ones (`dense` is its
    session), and the unit with the highest output cosine goes. A row has the unit's influence and,
    if it was measured, `cosine` from the step that chose it or the last step that measured it.
    """
    influence = block_influence(g, candidates, data, threads)
    order = sorted(range(len(candidates)), key=lambda i: influence[i])
    rows = [{"name": u.name, "influence": round(influence[i], 6)} for i, u in enumerate(candidates)]
    chosen: list[int] = []
    for _ in range(depth):
        left = [i for i in order if i not in chosen and _disjoint([candidates[c] for c in chosen], candidates[i])]
        if not left:
            raise BadInputError(f"--depth {depth}: only {len(chosen)} residual units can be removed together")
        for i in left[:SHORTLIST]:
            blocks = [b for c in (*chosen, i) for b in candidates[c].blocks]
            rows[i]["cosine"] = round(compare(dense, session(remove_blocks(g, blocks), threads), data).cosine, 6)
        chosen.append(max(left[:SHORTLIST], key=lambda i: rows[i]["cosine"]))
    return chosen, rows


def _unit_row(g: ModelGraph, unit: Unit, row: dict) -> dict:
    weights = {t for n in unit.nodes for t in g.nodes[n].inputs if t in g.initializer_names}
    return {**row, "adds": [g.nodes[b.add].name for b in unit.blocks], "nodes": len(unit.nodes),
            "weights": sum(int(np.prod(g.shape(t))) for t in weights)}


def remove_depth(g: ModelGraph, depth: int, data: Dataset | None, threads: int = 0) -> DepthResult:
    """Remove the `depth` least influential units of the (folded) model of `g`; see the module doc.
    Residual sums fused into Skip*LayerNormalization are split out first and fused back after."""
    unfused, fused = unfuse(g.model)
    if fused:
        g = ModelGraph(unfused, g.input_shapes)
    unit_kind, candidates = units(g)
    if not candidates:
        raise BadInputError(f"--depth {depth}: the model has no removable residual blocks (x + f(x) with f's "
                            "output of x's shape and read only by the Add)")
    if depth > len(candidates):
        raise BadInputError(f"--depth {depth}: the model has only {len(candidates)} removable "
                            f"{unit_kind}{'s' if len(candidates) > 1 else ''}")
    source = "given"
    if data is None:
        log.warning("--depth without --calib: blocks are ranked on synthetic inputs; pass --calib for a "
                    "choice that reflects the model's data")
        data, source = synthetic_dataset(session(g.model, threads), g.input_shapes, samples=8), "synthetic"
    data, dense = data.take(SCORE_SAMPLES), session(g.model, threads)
    chosen, rows = choose_units(g, candidates, depth, data, dense, threads)
    reduced = remove_blocks(g, [b for i in chosen for b in candidates[i].blocks])
    cosine = rows[chosen[-1]]["cosine"]  # the last greedy step measured all of them removed
    params_kept, macs_kept = kept_costs(g, reduced)
    report = {"requested": depth, "unit": unit_kind, "candidates": len(candidates), "data": source,
              "samples": len(data), "removed": [_unit_row(g, candidates[i], rows[i]) for i in chosen],
              "scores": rows, "cosine": cosine, "params_kept": params_kept, "macs_kept": macs_kept}
    return DepthResult(refuse(reduced, fused), report)


def kept_costs(g: ModelGraph, reduced: onnx.ModelProto) -> tuple[float, float]:
    """Fractions of the parameters and MACs of `g` that `reduced` (a subset of its nodes and
    constants, as remove_blocks makes it) keeps, without analysing `reduced` again."""
    names = {n.name or (n.output[0] if n.output else "") for n in reduced.graph.node}
    present = {t.name for t in reduced.graph.initializer} | {t for n in reduced.graph.node for t in n.output}
    gone = sum(int(np.prod(shape)) for name, shape, dtype in sizes(g.constants)
               if name not in present and len(shape) >= 1 and np.issubdtype(dtype, np.floating))
    total_params, per_node = count_params(g), count_macs(g, per_node=True)
    total_macs = sum(per_node.values())
    kept_macs = sum(v for name, v in per_node.items() if name in names)
    return (round(1.0 - gone / total_params, 6) if total_params else 1.0,
            round(kept_macs / total_macs, 6) if total_macs else 1.0)
