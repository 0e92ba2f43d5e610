#!/usr/bin/env python3
"""Random-init ViT-B/16 (torchvision's layout) exported to ONNX with both exporters (structure, not accuracy).

Pretrained torchvision weights are a download this machine cannot make, and torchvision's PyPI wheel
does not load against the CPU torch here; the module below is torchvision's VisionTransformer layout
(Conv patch embedding, class token Concat, positional Add, 12 pre-norm encoder blocks with LayerNorm,
nn.MultiheadAttention and a GELU MLP, the final LayerNorm and the classifier head on the class token),
which is the graph hidden-width pruning has to carry. Needs torch (tools only).

    python tools/make_vit.py [--out DIR]    # writes vit_b_16.onnx and vit_b_16_dynamo.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

CACHE = Path.home() / ".cache" / "onnxprune" / "transformers"


def vit_b_16(**shape):
    """torchvision.models.vit_b_16's modules and forward, random init (patch 16, width 768, 12 x 12 heads)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int, heads: int, mlp: int):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(d, heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))

        def forward(self, x):
            y = self.ln_1(x)
            x = x + self.self_attention(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self, d: int = 768, layers: int = 12, heads: int = 12, mlp: int = 3072, classes: int = 1000):
            super().__init__()
            self.conv_proj = nn.Conv2d(3, d, 16, 16)
            self.class_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
            self.pos_embedding = nn.Parameter(torch.randn(1, 197, d) * 0.02)
            self.layers = nn.Sequential(*[Block(d, heads, mlp) for _ in range(layers)])
            self.ln = nn.LayerNorm(d, eps=1e-6)
            self.head = nn.Linear(d, classes)

        def forward(self, x):
            x = self.conv_proj(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
            return self.head(self.ln(self.layers(x))[:, 0])

    return ViT(**shape)  # the defaults are ViT-B/16; fixtures pass a smaller shape


def export_image_model(model, x, path: Path, dynamo: bool) -> None:
    """`model(x)` to `path`: input "image", output "logits"; dynamo at opset 18 with its weights inline,
    TorchScript at opset 17 (the opsets make_vit and make_swin both use)."""
    import torch

    if dynamo:
        torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18, input_names=["image"],
                          output_names=["logits"], external_data=False)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"])


def export(out: Path, dynamo: bool) -> Path:
    import torch

    torch.manual_seed(0)
    model = vit_b_16().eval()
    path = out / f"vit_b_16{'_dynamo' if dynamo else ''}.onnx"
    x = torch.randn(1, 3, 224, 224)
    if True:  # grad mode on: eval-mode nn.MultiheadAttention under no_grad takes a fused path TorchScript cannot export
        export_image_model(model, x, path, dynamo)
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
