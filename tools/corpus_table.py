#!/usr/bin/env python3
"""The real-model corpus as a Markdown table: coupling, prunable share and cost after ratio 0.3.

For every real model in onnxprune.load.zoo (fetched once into ~/.cache/onnxprune): fold constants,
analyse, remove 30% of each prunable group (round_to 1), rewrite, and report

- groups: coupled channel groups found;
- prunable: share of the output channels of weight-bearing ops (Conv, Gemm, MatMul with a weight,
  LSTM hidden units, ...; each rule's first seed slot) that no barrier freezes;
- params and MACs before and after, and their ratio;
- with --oracle, the zero-channel oracle's cosine (dense model with the removed channels zeroed vs
  the pruned model, one synthetic input; the light models' constant 0.02 weights are replaced by
  seeded random ones first, or every output would be equal).

    python tools/corpus_table.py                 # all models
    python tools/corpus_table.py --oracle magika ppocr_rec
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from onnxprune.load import zoo  # noqa: E402
from onnxprune.graph.cost import count_macs, count_params  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.couple.dependency import Dependency, build_dependency  # noqa: E402
from onnxprune.load.fold import fold_constants  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.score.criteria import score  # noqa: E402
from onnxprune.load.model import load_model  # noqa: E402
from onnxprune.couple.ops import rule_for, Barrier  # noqa: E402
from onnxprune.check.oracle import expose_logits, randomize, zero_removed  # noqa: E402
from onnxprune.select.plan import select_uniform  # noqa: E402
from onnxprune.apply.rewrite import apply_plan  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.check.validate import check_valid, compare  # noqa: E402

RATIO = 0.3
MODELS = ["nudenet_320n", "ppocr_det", "ppocr_rec", "ppocr_cls", "ddddocr_common", "ddddocr_det", "magika",
          "light_resnet50", "light_densenet121", "light_inception_v1", "light_inception_v2", "light_shufflenet",
          "light_squeezenet", "light_vgg19", "light_bvlc_alexnet", "light_zfnet512"]
INPUT_SHAPES = {
    "nudenet_320n": {"images": (1, 3, 320, 320)},
    "ppocr_det": {"x": (1, 3, 320, 320)},
    "ppocr_rec": {"x": (1, 3, 48, 320)},
    "ppocr_cls": {"x": (1, 3, 48, 192)},
    "ddddocr_common": {"input1": (1, 1, 64, 320)},
    "magika": {"bytes": (1, 2048)},
}
REFUSED = ["ddddocr_old"]


def output_channel_share(dep: Dependency) -> tuple[int, int]:
    """(unfrozen, total) output channels of weight-bearing ops: each rule's first seed slot."""
    g = dep.graph
    free = total = 0
    for node in g.nodes:
        rule = rule_for(node)
        try:
            seeds = rule.seeds(g, node) if rule is not None else []
        except Barrier:
            seeds = []
        if not seeds or g.shape(seeds[0].tensor) is None:
            continue
        slot = seeds[0]
        size = g.shape(slot.tensor)[slot.axis]
        total += size
        if slot in dep.slot_index:
            free += int((~dep.channel_frozen[dep.elements(slot)]).sum())
    return free, total






def row(name: str, oracle: bool) -> dict:
    start = time.perf_counter()
    dense = load_model(zoo.fetch(name))
    folded = fold_constants(dense)
    if oracle and zoo.is_light(name):
        folded = randomize(folded)
    g = ModelGraph(folded, INPUT_SHAPES.get(name))
    dep = build_dependency(g)
    plan = select_uniform(dep, score(dep, "l2"), RATIO, round_to=1)
    pruned = apply_plan(plan)
    check_valid(pruned, dense)
    pg = ModelGraph(pruned, g.input_shapes)
    free, total = output_channel_share(dep)
    result = {"model": name, "framework": zoo.MODELS[name].framework, "groups": len(dep.groups),
              "prunable": free / total if total else 0.0,
              "params": (count_params(g), count_params(pg)), "macs": (count_macs(g), count_macs(pg))}
    if oracle:
        pruned_sess = session(pruned)
        data = synthetic_dataset(pruned_sess, g.input_shapes, samples=1)
        zeroed = expose_logits(zero_removed(dep, plan.removed), g)
        fidelity = compare(session(zeroed), session(expose_logits(pruned, g)), data)
        result["cosine"], result["rel_l2"] = fidelity.cosine, fidelity.rel_l2
    result["seconds"] = time.perf_counter() - start
    return result


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def markdown(rows: list[dict], oracle: bool) -> str:
    head = ["model", "from", "groups", "prunable out-channels", "params before → after", "params ratio",
            "MACs before → after", "MACs ratio"] + (["oracle cosine (rel. L2 error)"] if oracle else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        (p0, p1), (m0, m1) = r["params"], r["macs"]
        cells = [r["model"], r["framework"], str(r["groups"]), f"{r['prunable']:.0%}",
                 f"{_millions(p0)} → {_millions(p1)}", f"{p1 / p0:.3f}",
                 f"{m0 / 1e9:.3g}G → {m1 / 1e9:.3g}G", f"{m1 / m0:.3f}" if m0 else "-"]
        if oracle:
            cells.append(f"{r['cosine']:.8f} ({r['rel_l2']:.1e})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS, help="zoo names (default: the whole corpus)")
    parser.add_argument("--oracle", action="store_true", help="also run the zero-channel oracle")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models:
        r = row(name, args.oracle)
        print(f"{name}: {r['seconds']:.1f}s", file=sys.stderr)
        rows.append(r)
    print(markdown(rows, args.oracle))
    refused = [n for n in REFUSED if n not in args.models]
    for name in refused:
        try:
            load_model(zoo.fetch(name))
            print(f"\n{name}: loaded (expected a refusal)")
        except Exception as exc:  # BadInputError, one line
            print(f"\n`{name}` is refused: {exc}".replace(str(zoo.cache_dir()), "~/.cache/onnxprune"))
    print(f"\nRatio {RATIO} of every prunable group, round_to 1, input shapes: "
          + ", ".join(f"{m} {'x'.join(map(str, s))}" for v in INPUT_SHAPES.values() for m, s in v.items())
          + "; light models 1x3x224x224.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
