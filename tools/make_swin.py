#!/usr/bin/env python3
"""Random-init Swin-T (Hugging Face transformers' Swin) exported to ONNX with both exporters (structure, not accuracy).

torchvision's PyPI wheel does not load against the CPU torch here, so the model is transformers'
SwinForImageClassification with `SwinConfig()`'s defaults, which are Swin-T's shape (patch 4, embed 96,
depths 2/2/6/2, heads 3/6/12/24, window 7, 224 x 224, 1000 classes): window partition
Reshape/Transpose chains, shifted windows (roll), the relative position bias Gather, patch merging
(strided Slice + Concat + Linear) and LayerNorm everywhere. Needs torch and transformers (tools only).

    python tools/make_swin.py [--out DIR] [--only ts|dynamo] [--image N]   # swin_t.onnx, swin_t_dynamo.onnx

Also writes swin_t_calib.npz (32 images) and swin_t_eval.npz (16 other images): synthetic N(0, 1)
pixels, the only "data" a random-init model has, for `onnxprune prune --calib ... --data ...`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from make_vit import CACHE, export_image_model  # the same cache folder and exporter settings


def swin_t(image: int = 224):
    """transformers' Swin-T classifier (random init), returning only the logits."""
    import torch
    from transformers import SwinConfig, SwinForImageClassification

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.swin = SwinForImageClassification(SwinConfig(image_size=image, num_labels=1000))

        def forward(self, pixel_values):
            return self.swin(pixel_values=pixel_values).logits

    model = Logits()
    # transformers zero-inits every Linear bias and sets LayerNorm to ones/zeros; the dynamo exporter's
    # optimizer then merges those identical initializers into one shared tensor, which couples unrelated
    # layers of equal width. Trained weights are never identical, so draw them like a trained model's.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and module.bias is not None:
                module.bias.normal_(0.0, 0.02)
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.02)
    return model


def export(out: Path, dynamo: bool, image: int = 224) -> Path:
    import torch

    torch.manual_seed(0)
    model = swin_t(image).eval()
    suffix = "" if image == 224 else f"_{image}"
    path = out / f"swin_t{suffix}{'_dynamo' if dynamo else ''}.onnx"
    x = torch.randn(1, 3, image, image)
    with torch.no_grad():
        export_image_model(model, x, path, dynamo)
    return path


def write_data(out: Path, image: int = 224) -> None:
    """Synthetic calibration and evaluation images (normalized-pixel scale), disjoint seeds."""
    import numpy as np

    suffix = "" if image == 224 else f"_{image}"
    for name, n, seed in (("calib", 32, 0), ("eval", 16, 1)):
        pixels = np.random.default_rng(seed).standard_normal((n, 3, image, image)).astype(np.float32)
        np.savez(out / f"swin_t{suffix}_{name}.npz", image=pixels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(CACHE))
    ap.add_argument("--only", choices=["ts", "dynamo"])
    ap.add_argument("--image", type=int, default=224)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for dynamo in (False, True):
        if args.only and args.only != ("dynamo" if dynamo else "ts"):
            continue
        print(export(out, dynamo, args.image))
    write_data(out, args.image)


if __name__ == "__main__":
    main()
