#!/usr/bin/env python
"""Model folders pruned as a unit, then loaded and run by ONNX Runtime GenAI (needs the `genai` extra).

    python tools/bench_model_folder.py [--qwen2] [--json docs/bench_model_folder.json]

Folders: the GenAI-builder Llama of fixtures/transformers/genai_llama_folder and, with --qwen2, the same
shape as a Qwen2 (q/k/v biases) built into ~/.cache/onnxprune/folders/genai_qwen2 by
fixtures/transformers/make_genai_folder.py --qwen2. Each run is `onnxprune prune FOLDER -o OUT ...`; then
ONNX Runtime GenAI loads OUT and decodes 8 new tokens greedily from 32 random prompts of 8 tokens. Both
models are random-init: "next-token agreement" (greedy first new token, pruned vs dense, over the 32
prompts) only shows that the pruned folder runs and how far it moved, not quality.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LLAMA = ROOT / "fixtures" / "transformers" / "genai_llama_folder"
QWEN2 = Path.home() / ".cache" / "onnxprune" / "folders" / "genai_qwen2"
RUNS = {
    "--depth 1": ["--depth", "1"],
    "--target-macs 0.7": ["--target-macs", "0.7", "--round-to", "1"],
    "--target-macs 0.7 --scope local": ["--target-macs", "0.7", "--scope", "local", "--round-to", "1"],
    "--ratio 0.5 --scope local": ["--ratio", "0.5", "--scope", "local", "--round-to", "1"],
    "--depth 1 --target-macs 0.45 --scope local": ["--depth", "1", "--target-macs", "0.45", "--scope", "local",
                                                    "--round-to", "1"],
}
PROMPTS, PROMPT_LEN, NEW = 32, 8, 8


def generate(folder: Path, prompts: np.ndarray) -> list[list[int]]:
    import onnxruntime_genai as og
    model = og.Model(str(folder))
    out = []
    for prompt in prompts:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=PROMPT_LEN + NEW, min_length=PROMPT_LEN + NEW, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(prompt[None].astype(np.int32))
        while not gen.is_done():
            gen.generate_next_token()
        out.append([int(t) for t in gen.get_sequence(0)[PROMPT_LEN:]])
    return out


def run(name: str, folder: Path, label: str, flags: list[str], tmp: Path, dense: list[list[int]],
        prompts: np.ndarray) -> dict:
    out, report = tmp / f"{name}-{len(list(tmp.iterdir()))}", tmp / "report.json"
    cmd = [sys.executable, "-m", "onnxprune", "prune", str(folder), "-o", str(out), *flags, "--bench-rounds", "0",
           "--report", str(report), "-q", "--force"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    row = {"model": name, "run": label, "exit": done.returncode}
    if done.returncode != 0:
        row["error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        return row
    rep = json.loads(report.read_text())
    pruned = generate(out, prompts)
    genai = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    row.update(params=round(rep["after"]["params"] / rep["before"]["params"], 3),
               macs=round(rep["after"]["macs"] / rep["before"]["macs"], 3),
               removed_layers=[r["name"] for r in rep.get("depth", {}).get("removed", [])],
               channels_removed=rep["plan"]["removed"], cosine=round(rep["fidelity"]["cosine"], 3),
               config_changes=rep["folder"]["config_changes"],
               genai={k: genai[k] for k in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                            "head_size", "hidden_size")},
               generated=sum(len(p) for p in pruned),
               next_token_agreement=round(float(np.mean([a[0] == b[0] for a, b in zip(pruned, dense)])), 3))
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--qwen2", action="store_true", help="also the Qwen2 folder (built on first use)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    folders = {"llama (GenAI builder)": LLAMA}
    if args.qwen2:
        if not (QWEN2 / "genai_config.json").exists():
            subprocess.run([sys.executable, str(ROOT / "fixtures/transformers/make_genai_folder.py"), "--qwen2",
                            "--out", str(QWEN2)], check=True)
        folders["qwen2 (GenAI builder)"] = QWEN2
    prompts = np.random.default_rng(0).integers(3, 96, (PROMPTS, PROMPT_LEN))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in folders.items():
            dense = generate(folder, prompts)
            for label, flags in RUNS.items():
                row = run(name.split()[0], folder, label, flags, Path(tmp), dense, prompts)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| folder | run | params | MACs | what went | genai_config after | GenAI: tokens generated | next-token agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["exit"]:
            print(f"| {r['model']} | `{r['run']}` | | | exit {r['exit']}: {r.get('error', '')} | | | |")
            continue
        went = ", ".join(r["removed_layers"]) or ""
        went = (went + (" + " if went and r["channels_removed"] else "")
                + (f"{r['channels_removed']} channels" if r["channels_removed"] else ""))
        g = r["genai"]
        print(f"| {r['model']} | `{r['run']}` | {r['params']} | {r['macs']} | {went} | layers {g['num_hidden_layers']}, "
              f"heads {g['num_attention_heads']}/{g['num_key_value_heads']} | {r['generated']} | "
              f"{r['next_token_agreement']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
