#!/usr/bin/env python3
"""ONNX exports of the architectures issue 14 names but no fetchable package ships: MobileNet-,
EfficientNet- and RegNet-style CNNs, built in plain PyTorch with random weights (for latency only).

    /work/torchvenv/bin/python tools/make_arch_exports.py            # all, into the cache
    /work/torchvenv/bin/python tools/make_arch_exports.py mobilenetv2 regnety_400mf --force
    python tools/make_arch_exports.py --list                          # needs no torch

Each network follows its paper's layer table (below, as data), in eval mode, 1x3x224x224, exported
with torch.onnx (TorchScript exporter, opset 17). Weights are random (He init, seed --seed); each
BatchNorm gets a random per-channel scale and shift and its running statistics are those of random
images passed in train mode, so BN folds into convolutions whose channel norms vary as in a trained
model and activations stay in range. The accuracy is meaningless; the op mix, shapes and MACs are the
architecture's. Written atomically to ~/.cache/onnxprune/survey/arch/NAME.onnx (ONNXPRUNE_ARCH_CACHE
overrides); tools/bench_latency_efficiency.py and bench_allocation_pair.py take them as `arch:NAME`.
torch stays out of the project's dependencies: run this with a separate venv holding torch + onnx.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

CACHE = Path(os.environ.get("ONNXPRUNE_ARCH_CACHE", Path.home() / ".cache" / "onnxprune" / "survey" / "arch"))

# MobileNetV2 (Sandler et al. 2018): expansion t, channels c, repeats n, first stride s
MOBILENETV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
# MobileNetV3-Large (Howard et al. 2019): kernel, expanded, out, squeeze-excite, activation, stride
MOBILENETV3_LARGE = [(3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
                     (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
                     (3, 240, 80, False, "hswish", 2), (3, 200, 80, False, "hswish", 1),
                     (3, 184, 80, False, "hswish", 1), (3, 184, 80, False, "hswish", 1),
                     (3, 480, 112, True, "hswish", 1), (3, 672, 112, True, "hswish", 1),
                     (5, 672, 160, True, "hswish", 2), (5, 960, 160, True, "hswish", 1),
                     (5, 960, 160, True, "hswish", 1)]
# EfficientNet-B0 (Tan & Le 2019): expansion, kernel, stride, out, repeats (MBConv, SE 0.25, SiLU)
EFFICIENTNET_B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                   (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
# RegNetY-400MF (Radosavovic et al. 2020): stage widths and depths, group width 8, bottleneck 1, SE 0.25
REGNETY_400MF = {"widths": (48, 104, 208, 440), "depths": (1, 3, 6, 6), "group_width": 8, "se": 0.25}
# MnasNet-A1-free B1 1.0 (Tan et al. 2019, torchvision's mnasnet1_0): out, kernel, stride, expansion, repeats
MNASNET_1_0 = [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2), (192, 5, 2, 6, 4),
               (320, 3, 1, 6, 1)]

ARCHS = {
    "mobilenetv2": "MobileNetV2 1.0: inverted residuals, depthwise 3x3, ReLU6 (~300 MMACs)",
    "mobilenetv3_large": "MobileNetV3-Large: depthwise 3x3/5x5, SE with hard-sigmoid, hard-swish (~220 MMACs)",
    "efficientnet_b0": "EfficientNet-B0: MBConv, depthwise 3x3/5x5, SE, SiLU as Sigmoid*x (~390 MMACs)",
    "regnety_400mf": "RegNetY-400MF: bottlenecks with grouped 3x3 (group width 8) and SE, ReLU (~400 MMACs)",
    "mnasnet1_0": "MnasNet 1.0: inverted residuals, depthwise 3x3/5x5, no SE, ReLU (~315 MMACs)",
}


def arch_path(name: str) -> Path:
    """The cached export of `name`; SystemExit with the command that makes it if unknown or missing."""
    if name not in ARCHS:
        raise SystemExit(f"unknown arch model {name!r} (known: {', '.join(ARCHS)})")
    path = CACHE / f"{name}.onnx"
    if not path.is_file():
        raise SystemExit(f"arch model {name!r} not built: run tools/make_arch_exports.py {name} "
                         f"with a python that has torch (it writes {path})")
    return path


def divisible(v: float, d: int = 8) -> int:
    """Round channels to a multiple of d, not below 90% of v (the MobileNet rule)."""
    out = max(d, int(v + d / 2) // d * d)
    return out + d if out < 0.9 * v else out


# ---- builders (torch imported only here) ---------------------------------------------------------------

def _layers():
    import torch
    from torch import nn

    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "silu": nn.SiLU}

    def cbn(cin, cout, k=1, s=1, groups=1, act="relu"):
        mods = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*mods, acts[act]()) if act else nn.Sequential(*mods)

    class SE(nn.Module):
        def __init__(self, ch, squeeze, act="relu", gate="sigmoid"):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(ch, squeeze, 1), nn.Conv2d(squeeze, ch, 1)
            self.act = acts[act]()
            self.gate = nn.Hardsigmoid() if gate == "hsigmoid" else nn.Sigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(self.act(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))

    class Inverted(nn.Module):
        """Expand 1x1, depthwise kxk, optional SE, project 1x1; residual when shapes match."""

        def __init__(self, cin, exp, cout, k, s, act, se=None):
            super().__init__()
            mods = [cbn(cin, exp, act=act)] if exp != cin else []
            mods.append(cbn(exp, exp, k, s, groups=exp, act=act))
            if se is not None:
                mods.append(se(exp))
            mods.append(cbn(exp, cout, act=None))
            self.body, self.res = nn.Sequential(*mods), s == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    class RegBlock(nn.Module):
        def __init__(self, cin, cout, s, gw, se_ratio):
            super().__init__()
            self.body = nn.Sequential(cbn(cin, cout), cbn(cout, cout, 3, s, groups=cout // gw),
                                      SE(cout, int(round(se_ratio * cin))), cbn(cout, cout, act=None))
            self.proj = cbn(cin, cout, 1, s, act=None) if (s != 1 or cin != cout) else None
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.body(x) + (self.proj(x) if self.proj is not None else x))

    class Net(nn.Module):
        def __init__(self, features, cout, hidden=None, head_act="relu"):
            super().__init__()
            self.features = nn.Sequential(*features)
            head = [nn.Linear(cout, hidden), acts[head_act](), nn.Linear(hidden, 1000)] if hidden else \
                [nn.Linear(cout, 1000)]
            self.classifier = nn.Sequential(*head)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    return nn, cbn, SE, Inverted, RegBlock, Net


def build(name: str):
    """The torch module of one architecture (random weights, train mode)."""
    nn, cbn, SE, Inverted, RegBlock, Net = _layers()
    f = []
    if name == "mobilenetv2":
        f, cin = [cbn(3, 32, 3, 2, act="relu6")], 32
        for t, c, n, s in MOBILENETV2:
            for i in range(n):
                f.append(Inverted(cin, cin * t, c, 3, s if i == 0 else 1, "relu6"))
                cin = c
        return Net(f + [cbn(cin, 1280, act="relu6")], 1280)
    if name == "mobilenetv3_large":
        f, cin = [cbn(3, 16, 3, 2, act="hswish")], 16
        for k, exp, c, se, act, s in MOBILENETV3_LARGE:
            make_se = (lambda ch: SE(ch, divisible(ch / 4), "relu", "hsigmoid")) if se else None
            f.append(Inverted(cin, exp, c, k, s, act, make_se))
            cin = c
        return Net(f + [cbn(cin, 960, act="hswish")], 960, hidden=1280, head_act="hswish")
    if name == "efficientnet_b0":
        f, cin = [cbn(3, 32, 3, 2, act="silu")], 32
        for e, k, s, c, n in EFFICIENTNET_B0:
            for i in range(n):
                squeeze = max(1, cin // 4)  # of the block's input width
                f.append(Inverted(cin, cin * e, c, k, s if i == 0 else 1, "silu",
                                  lambda ch, q=squeeze: SE(ch, q, "silu")))
                cin = c
        return Net(f + [cbn(cin, 1280, act="silu")], 1280)
    if name == "regnety_400mf":
        f, cin, spec = [cbn(3, 32, 3, 2)], 32, REGNETY_400MF
        for w, d in zip(spec["widths"], spec["depths"]):
            for i in range(d):
                f.append(RegBlock(cin, w, 2 if i == 0 else 1, spec["group_width"], spec["se"]))
                cin = w
        return Net(f, cin)
    if name == "mnasnet1_0":
        f = [cbn(3, 32, 3, 2), cbn(32, 32, 3, 1, groups=32), cbn(32, 16, act=None)]
        cin = 16
        for c, k, s, e, n in MNASNET_1_0:
            for i in range(n):
                f.append(Inverted(cin, cin * e, c, k, s if i == 0 else 1, "relu"))
                cin = c
        return Net(f + [cbn(cin, 1280)], 1280)
    raise SystemExit(f"unknown arch model {name!r} (known: {', '.join(ARCHS)})")


def randomise(model, seed: int, batches: int = 2, batch: int = 4):
    """He-init weights, random BN scale/shift, BN running statistics of random images; eval mode."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.2, 1.5)  # channel norms that vary, as trained BN scales do
            nn.init.normal_(m.bias, 0.0, 0.2)
            m.momentum = None  # running stats = the plain average over the calibration batches
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, 224, 224))
    return model.eval()


def export(name: str, seed: int = 0, out_dir: Path = CACHE, force: bool = False) -> Path:
    """Build, randomise and export one architecture; atomic write; returns the file."""
    import torch
    path = out_dir / f"{name}.onnx"
    if path.is_file() and not force:
        return path
    model = randomise(build(name), seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(tmp), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help=f"which (default all): {', '.join(ARCHS)}")
    ap.add_argument("--list", action="store_true", help="list the architectures and their cache state")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild a cached export")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in ARCHS]
    if unknown:
        print(f"error: unknown arch model {unknown[0]!r} (known: {', '.join(ARCHS)})", file=sys.stderr)
        return 2
    if args.list:
        for name, note in ARCHS.items():
            state = "built" if (CACHE / f"{name}.onnx").is_file() else "not built"
            print(f"arch:{name:18s} {state:9s} {note}")
        return 0
    for name in args.names or list(ARCHS):
        print(export(name, args.seed, CACHE, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
