#!/usr/bin/env python3
"""Overall cosine against the worst output or part (check/fidelity.py) for pruned models of one dense
model, on the same evaluation data: what a search's quality axis sees.

    python tools/fidelity_parts.py DENSE.onnx EVAL.npz CANDIDATE.onnx [CANDIDATE.onnx ...]
    python tools/fidelity_parts.py /tmp/search9/work/data/model.onnx /tmp/search9/work/data/eval.npz \\
        /tmp/search9/work/serial/candidates/c0*.onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dense")
    ap.add_argument("data", help=".npz keyed by the model's input names")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args(argv)
    from onnxprune.check.fidelity import compare
    from onnxprune.check.gates import worst_output
    from onnxprune.load.data import load_npz
    from onnxprune.load.runtime import session

    dense = session(args.dense)
    data = load_npz(args.data, {i.name: len(i.shape) for i in dense.get_inputs()})
    print("| model | overall cosine | worst output or part | its cosine | parts |")
    print("|---|---:|---|---:|---|")
    for path in args.models:
        fid = compare(dense, session(path), data).as_dict()
        name, worst = worst_output(fid)
        parts = "; ".join(f"{out} rows {p['rows']}: {p['cosine']:.4f}" for out, ps in fid.get("parts", {}).items()
                          for p in ps)
        print(f"| {Path(path).stem} | {fid['cosine']:.4f} | {name or '(the only one)'} | {worst:.4f} | {parts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
