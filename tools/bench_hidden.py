#!/usr/bin/env python3
"""Hidden (residual-stream) width on transformer exports: the stream group, validity and the oracle.

For each model the dependency is built with the stream carried through every norm (as `--hidden on`
does, restore projections added where an output is the stream), then 3 random plans remove half of
every group, stream included. Reported: the stream width, validity in ONNX Runtime, params kept, and
the masked zero-channel oracle (check/stream_oracle.py: the dense model with the removed channels
zeroed and each norm's statistics over the kept channels) as the worst relative gap; "-" where the
stream passes through fused com.microsoft norms the oracle does not decompose (validity only).

Models: the stream fixtures (fixtures/transformers/make_stream.py), the Llama GQA fixtures (both
exporters), bert_tiny_ort and minilm_ort (fused ORT forms), all-MiniLM-L6-v2 (TorchScript export of
tools/survey_exports.py), the random 256-wide Llama of tools/bench_transformers.py, and the random-init
ViT-B/16 of tools/make_vit.py (both exporters) and its 32-wide fixture (fixtures/transformers/vit_tiny*.onnx).

    python tools/bench_hidden.py [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tools"))
sys.path.insert(2, str(ROOT / "fixtures" / "transformers"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import bench_transformers as bt  # noqa: E402
import make_stream  # noqa: E402
from onnxprune.apply.restore import add_restores, drop_identity_restores  # noqa: E402
from onnxprune.apply.rewrite import apply_plan  # noqa: E402
from onnxprune.check.stream_oracle import masked_reference  # noqa: E402
from onnxprune.check.validate import check_valid  # noqa: E402
from onnxprune.couple.dependency import build_dependency  # noqa: E402
from onnxprune.couple.hidden import hidden_sizes, stream_groups  # noqa: E402
from onnxprune.graph.cost import count_params  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import run_dataset, session  # noqa: E402

FUSED = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "EmbedLayerNormalization"}
MODELS = {f"stream_{n}": (lambda n=n: make_stream.build(n), {"input_ids": (1, make_stream.S)}) for n in make_stream.NORMS}
MODELS.update({k: v for k, v in bt.MODELS.items() if k != "genai_llama" and not k.endswith("_folder")})
MODELS["minilm_ts"] = (lambda: bt.SURVEY, {n: (1, 32) for n in bt.BERT_INPUTS})
for _name in ("vit_tiny", "vit_tiny_dynamo"):  # fixtures/transformers/make_vit_tiny.py (nn.MultiheadAttention)
    MODELS[_name] = (lambda n=_name: bt.FIXTURES / f"{n}.onnx", {"image": (1, 3, 224, 224)})
for _name in ("vit_b_16", "vit_b_16_dynamo"):  # tools/make_vit.py (random init, torchvision's layout)
    MODELS[_name] = (lambda n=_name: bt.CACHE / f"{n}.onnx", {"image": (1, 3, 224, 224)})
for _name in ("swin_t", "swin_t_dynamo"):  # tools/make_swin.py (random init, transformers' Swin-T)
    MODELS[_name] = (lambda n=_name: bt.CACHE / f"{n}.onnx", {"image": (1, 3, 224, 224)})


def _load(make) -> onnx.ModelProto:
    made = make()
    return made if isinstance(made, onnx.ModelProto) else onnx.load(str(made))


def measure(name: str) -> str:
    make, shapes = MODELS[name]
    try:
        dense = _load(make)
    except Exception as exc:  # a maker needs torch/transformers or files not made here
        return f"| {name} | skipped: {type(exc).__name__}: {str(exc)[:80]} |"
    dep = build_dependency(ModelGraph(dense, shapes), hidden=True)
    model = add_restores(dense, dep)
    if model is not None:
        dep = build_dependency(ModelGraph(model, shapes), hidden=True)
    streams = [g for g in stream_groups(dep) if g.size > 1]
    if not streams:
        return f"| {name} | no stream group |"
    fused = any(n.op_type in FUSED for n in dense.graph.node)
    worst, kept, widths = 0.0, [], ""
    for seed in (0, 1, 2):
        plan = bt.random_plan(dep, seed)
        widths = ", ".join(f"{h['before']} -> {h['after']}" for h in hidden_sizes(dep, plan.removed))
        pruned = drop_identity_restores(apply_plan(plan))
        check_valid(pruned, dense)
        kept.append(count_params(ModelGraph(pruned, shapes)) / count_params(ModelGraph(dense, shapes)))
        if fused:
            continue
        ref, small = session(masked_reference(dep, plan.removed)), session(pruned)
        data = synthetic_dataset(ref, dep.graph.input_shapes, 1, seed=seed)
        for a, b in zip(run_dataset(ref, data), run_dataset(small, data)):
            assert a.shape == b.shape
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(a).max(), 1e-6)))
    frozen = sum(1 for g in streams if g.prunable == 0)
    return (f"| {name} | {widths}{' (frozen)' if frozen else ''} | ok | {np.mean(kept):.3f} | "
            f"{'-' if fused else f'{worst:.1e}'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", choices=[[]] + list(MODELS), default=[])
    args = ap.parse_args(argv)
    print("| model | hidden width (random plan) | valid | params kept (mean of 3) | masked oracle gap |")
    print("|---|---|---|---|---|")
    for name in args.names or list(MODELS):
        print(measure(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
