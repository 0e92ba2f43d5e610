#!/usr/bin/env python3
"""A pre-norm transformer encoder of any size, its weights written as external data one tensor at a
time (the whole model is never in memory), for the memory and time bounds of issue 11.

    x[batch, seq, hidden] -> L x (x + Attn(Norm(x)); x + FFN(Norm(x))) -> Norm -> y[batch, seq, hidden]

Attention is plain ONNX (MatMul, Reshape to heads, Transpose, Softmax); the FFN is MatMul -> Gelu or
SiLU (x * Sigmoid(x)) -> MatMul; the norm is LayerNormalization or RMSNorm (built from ReduceMean,
Sqrt, Div, Mul). Parameters: layers * (4 h^2 + 2 h f + biases) + norms. The default (20 layers,
hidden 2048, FFN 8192, 16 heads) has 1.007 billion parameters, 4.03 GB of float32 weights; 30 layers
with FFN 4096 is another 1.0-billion shape.

    python tools/make_big_transformer.py big.onnx                          # 1.0B parameters
    python tools/make_big_transformer.py small.onnx --layers 2 --hidden 256 --ffn 1024 --heads 4
    python tools/make_big_transformer.py z.onnx --zeros                    # weights all zero, as a sparse file

`--zeros` leaves the data file a hole (truncate): gigabytes that cost no disk and no time to write.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from onnx import TensorProto, helper

OPSET = 20  # Gelu is an ONNX op from opset 20


class Writer:
    """Appends tensors to the external data file (page-aligned) and keeps only their references."""

    def __init__(self, data_path: str, location: str, rng: np.random.Generator | None):
        self.file = open(data_path, "wb")
        self.location = location
        self.rng = rng  # None: zeros, left as holes in the file
        self.initializers: list[TensorProto] = []
        self.params = 0

    def add(self, name: str, shape: tuple[int, ...], kind: str = "weight") -> str:
        count = int(np.prod(shape))
        self.params += count
        offset = self.file.seek(0, os.SEEK_END)
        offset += -offset % 4096
        if self.rng is None:
            self.file.truncate(offset + 4 * count)
        else:
            if kind == "weight":
                value = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(shape[0]))
            elif kind == "scale":
                value = np.ones(shape, np.float32)
            else:
                value = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            self.file.seek(offset)
            self.file.write(value.tobytes())
            del value
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        for key, val in (("location", self.location), ("offset", str(offset)), ("length", str(4 * count))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, val
        tensor.data_location = TensorProto.EXTERNAL
        self.initializers.append(tensor)
        return name

    def close(self) -> None:
        self.file.close()


def _norm(nodes: list, w: Writer, x: str, prefix: str, hidden: int, rms: bool) -> str:
    scale = w.add(f"{prefix}.weight", (hidden,), "scale")
    if not rms:
        bias = w.add(f"{prefix}.bias", (hidden,), "bias")
        nodes.append(helper.make_node("LayerNormalization", [x, scale, bias], [f"{prefix}.out"], name=prefix,
                                      axis=-1, epsilon=1e-5))
        return f"{prefix}.out"
    p = prefix
    nodes += [helper.make_node("Mul", [x, x], [f"{p}.sq"], name=f"{p}.sq"),
              helper.make_node("ReduceMean", [f"{p}.sq", "axes_last"], [f"{p}.ms"], name=f"{p}.mean", keepdims=1),
              helper.make_node("Add", [f"{p}.ms", "eps"], [f"{p}.mse"], name=f"{p}.eps"),
              helper.make_node("Sqrt", [f"{p}.mse"], [f"{p}.rms"], name=f"{p}.sqrt"),
              helper.make_node("Div", [x, f"{p}.rms"], [f"{p}.n"], name=f"{p}.div"),
              helper.make_node("Mul", [f"{p}.n", scale], [f"{p}.out"], name=f"{p}.scale")]
    return f"{p}.out"


def _linear(nodes: list, w: Writer, x: str, name: str, fan_in: int, fan_out: int) -> str:
    weight = w.add(f"{name}.weight", (fan_in, fan_out))
    bias = w.add(f"{name}.bias", (fan_out,), "bias")
    nodes += [helper.make_node("MatMul", [x, weight], [f"{name}.mm"], name=f"{name}.matmul"),
              helper.make_node("Add", [f"{name}.mm", bias], [f"{name}.out"], name=f"{name}.bias_add")]
    return f"{name}.out"


def _attention(nodes: list, w: Writer, x: str, p: str, hidden: int, heads: int) -> str:
    q, k, v = (_linear(nodes, w, x, f"{p}.{n}", hidden, hidden) for n in "qkv")
    split = {}
    for n, t, perm in (("q", q, [0, 2, 1, 3]), ("k", k, [0, 2, 3, 1]), ("v", v, [0, 2, 1, 3])):
        nodes += [helper.make_node("Reshape", [t, "heads_shape"], [f"{p}.{n}.heads"], name=f"{p}.{n}.reshape"),
                  helper.make_node("Transpose", [f"{p}.{n}.heads"], [f"{p}.{n}.t"], name=f"{p}.{n}.transpose",
                                   perm=perm)]
        split[n] = f"{p}.{n}.t"
    nodes += [helper.make_node("MatMul", [split["q"], split["k"]], [f"{p}.scores"], name=f"{p}.qk"),
              helper.make_node("Mul", [f"{p}.scores", "attn_scale"], [f"{p}.scaled"], name=f"{p}.scale"),
              helper.make_node("Softmax", [f"{p}.scaled"], [f"{p}.probs"], name=f"{p}.softmax", axis=-1),
              helper.make_node("MatMul", [f"{p}.probs", split["v"]], [f"{p}.ctx"], name=f"{p}.pv"),
              helper.make_node("Transpose", [f"{p}.ctx"], [f"{p}.ctx.t"], name=f"{p}.ctx.transpose", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", [f"{p}.ctx.t", "merge_shape"], [f"{p}.merged"], name=f"{p}.merge")]
    return _linear(nodes, w, f"{p}.merged", f"{p}.o", hidden, hidden)


def _ffn(nodes: list, w: Writer, x: str, p: str, hidden: int, ffn: int, act: str) -> str:
    up = _linear(nodes, w, x, f"{p}.up", hidden, ffn)
    if act == "gelu":
        nodes.append(helper.make_node("Gelu", [up], [f"{p}.act"], name=f"{p}.gelu"))
    else:
        nodes += [helper.make_node("Sigmoid", [up], [f"{p}.sig"], name=f"{p}.sigmoid"),
                  helper.make_node("Mul", [up, f"{p}.sig"], [f"{p}.act"], name=f"{p}.silu")]
    return _linear(nodes, w, f"{p}.act", f"{p}.down", ffn, hidden)


def make(path: str, layers: int, hidden: int, ffn: int, heads: int, norm: str = "layernorm",
         act: str = "gelu", zeros: bool = False, seed: int = 0) -> int:
    """Write the model to `path` and its weights to `path`.data; return the parameter count."""
    if hidden % heads:
        raise SystemExit(f"hidden {hidden} is not a multiple of heads {heads}")
    location = os.path.basename(path) + ".data"
    w = Writer(os.path.join(os.path.dirname(os.path.abspath(path)), location), location,
               None if zeros else np.random.default_rng(seed))
    small = [helper.make_tensor("heads_shape", TensorProto.INT64, [4], [0, 0, heads, hidden // heads]),
             helper.make_tensor("merge_shape", TensorProto.INT64, [3], [0, 0, hidden]),
             helper.make_tensor("attn_scale", TensorProto.FLOAT, [], [1.0 / np.sqrt(hidden // heads)])]
    if norm == "rmsnorm":
        small += [helper.make_tensor("axes_last", TensorProto.INT64, [1], [-1]),
                  helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-5])]
    nodes: list = []
    x, rms = "x", norm == "rmsnorm"
    try:
        for i in range(layers):
            p = f"layer{i}"
            h = _attention(nodes, w, _norm(nodes, w, x, f"{p}.norm1", hidden, rms), f"{p}.attn", hidden, heads)
            nodes.append(helper.make_node("Add", [x, h], [f"{p}.res1"], name=f"{p}.res1"))
            f = _ffn(nodes, w, _norm(nodes, w, f"{p}.res1", f"{p}.norm2", hidden, rms), f"{p}.ffn", hidden, ffn, act)
            nodes.append(helper.make_node("Add", [f"{p}.res1", f], [f"{p}.res2"], name=f"{p}.res2"))
            x = f"{p}.res2"
        out = _norm(nodes, w, x, "final_norm", hidden, rms)
        nodes.append(helper.make_node("Identity", [out], ["y"], name="output"))
    finally:
        w.close()
    graph = helper.make_graph(nodes, "big_transformer",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", hidden])],
                              small + w.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="make_big_transformer")
    model.ir_version = 9
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return w.params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--ffn", type=int, default=8192)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--norm", choices=["layernorm", "rmsnorm"], default="layernorm")
    parser.add_argument("--act", choices=["gelu", "silu"], default="gelu")
    parser.add_argument("--zeros", action="store_true", help="all-zero weights, written as a sparse file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    params = make(args.path, args.layers, args.hidden, args.ffn, args.heads, args.norm, args.act, args.zeros, args.seed)
    print(f"{args.path}: {params / 1e9:.3f}B parameters, {4 * params / 1e9:.2f} GB of weights in {args.path}.data",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
