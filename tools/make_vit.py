#!/usr/bin/env python3
"""Random-init torchvision ViT-B/16 exported to ONNX with both exporters (structure, not accuracy).

Pretrained torchvision weights are a download this machine cannot make; a random-init ViT-B/16 has
the same graph (Conv patch embedding, class token Concat, positional Add, 12 pre-norm encoder blocks
with LayerNorm, MultiheadAttention and MLP, the final LayerNorm and the classifier head), which is
what hidden-width pruning has to carry. Needs torch and torchvision (tools only).

    python tools/make_vit.py [--out DIR]    # writes vit_b_16.onnx and vit_b_16_dynamo.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

CACHE = Path.home() / ".cache" / "onnxprune" / "transformers"


def export(out: Path, dynamo: bool) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    path = out / f"vit_b_16{'_dynamo' if dynamo else ''}.onnx"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18, input_names=["image"],
                              output_names=["logits"], external_data=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                              output_names=["logits"])
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(CACHE))
    ap.add_argument("--only", choices=["ts", "dynamo"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for dynamo in (False, True):
        if args.only and args.only != ("dynamo" if dynamo else "ts"):
            continue
        print(export(out, dynamo))


if __name__ == "__main__":
    main()
