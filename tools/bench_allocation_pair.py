#!/usr/bin/env python3
"""`--target-latency` before and after a change, timed in one interleaved pass against dense.

    python tools/bench_allocation_pair.py --before-src /tmp/before --models light_densenet121,nudenet_320n
    python tools/bench_allocation_pair.py --kind macs --after-opts '{"round_to": 16}' --models survey:opennsfw

For each model, `onnxprune.prune(..., target_latency=T)` runs twice in subprocesses (l2, global
scope, no data, no recovery, --threads: the settings of tools/bench_latency_efficiency.py): once
with the onnxprune source tree at --before-src first on PYTHONPATH (e.g. `git archive REV onnxprune
| tar -x -C DIR`), once with this checkout's; or both with this checkout's and different options (--before-opts,
--after-opts, e.g. a width rounding), or a MACs target (--kind macs). The dense model and both pruned models are then timed
in ONE interleaved pass (onnxprune/search/timing.py: each round runs all three in a shuffled order,
median of per-round ratios, more rounds while the noise is above 0.01), so both sides meet the same
load. Efficiency = MACs kept / latency kept. Models: zoo names, `survey:KEY` (an export of
tools/survey_exports.py), `arch:NAME` (tools/make_arch_exports.py) or .onnx paths, with their own input shapes. "inside" is the ratio the
latency search measured for its plan (its own pass, a minute earlier). The load average is printed
next to every row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnx  # noqa: E402

from bench_target_latency import make_session  # noqa: E402
from onnxprune.graph.cost import count_macs  # noqa: E402
from onnxprune.graph.model_graph import ModelGraph  # noqa: E402
from onnxprune.load import zoo  # noqa: E402
from onnxprune.load.data import synthetic_dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.search.timing import summarize, time_until_quiet  # noqa: E402

PRUNE = """
import json, sys, onnxprune
r = onnxprune.prune(sys.argv[1], criterion="l2", scope="global", recover="none", bench_rounds=0,
                    threads=int(sys.argv[4]), **{sys.argv[6]: float(sys.argv[3])}, **json.loads(sys.argv[5]))
r.save(sys.argv[2], force=True)
print(json.dumps({"latency": r.report["plan"].get("latency", {}), "round_to": r.report["options"].get("round_to"),
                  "source": onnxprune.__file__}))
"""


def pruned_by(src: Path, model: str, out: str, target: float, threads: int, opts: str = "{}",
              kind: str = "target_latency") -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    # run from the output's folder: `python -c` puts the working directory before PYTHONPATH, and a
    # checkout's own onnxprune/ there would win over --before-src
    done = subprocess.run([sys.executable, "-c", PRUNE, model, out, str(target), str(threads), opts, kind], env=env,
                          capture_output=True, text=True, check=True, cwd=os.path.dirname(out))
    info = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(info["source"]).resolve().is_relative_to(src.resolve()):
        raise SystemExit(f"pruned with {info['source']}, not the code under {src}")
    return info


def model_file(name: str) -> str:
    """A zoo name's cached file, a survey export's file, an `arch:NAME` export's
    (tools/make_arch_exports.py), or the path given."""
    if name.startswith("survey:"):
        import survey_exports
        entry = survey_exports.BY_KEY.get(name[len("survey:"):])
        if entry is None:
            raise SystemExit(f"unknown survey model {name!r} (python tools/survey_exports.py --list)")
        return str(survey_exports.model_path(entry))
    if name.startswith("arch:"):
        import make_arch_exports
        return str(make_arch_exports.arch_path(name[len("arch:"):]))
    return name if name.endswith(".onnx") else str(zoo.fetch(name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-src", default=str(ROOT), help="a folder holding the previous onnxprune/ package "
                    "(default: this checkout's, to compare options only)")
    ap.add_argument("--before-opts", default="{}", help='prune() options of the "before" side, JSON')
    ap.add_argument("--after-opts", default="{}", help='prune() options of the "after" side, JSON')
    ap.add_argument("--kind", default="latency", choices=("latency", "macs"), help="the target's kind")
    ap.add_argument("--models", default="light_densenet121,nudenet_320n")
    ap.add_argument("--target", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    for opts in (args.before_opts, args.after_opts):
        try:
            if not isinstance(json.loads(opts), dict):
                raise ValueError("not an object")
        except ValueError as e:
            print(f"error: bad options {opts!r}: {e}", file=sys.stderr)
            return 2
    print("| model | code | allocation | round_to | MACs kept | latency (one pass) | noise | inside | efficiency | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            path = model_file(name)
            dense = onnx.load(path)
            macs0 = count_macs(ModelGraph(dense))
            runs = {}
            sides = (("before", Path(args.before_src), args.before_opts), ("after", ROOT, args.after_opts))
            for code, src, opts in sides:
                out = os.path.join(tmp, f"{name}-{code}.onnx")
                runs[code] = (out, pruned_by(src, path, out, args.target, args.threads, opts, f"target_{args.kind}"),
                              os.getloadavg()[0])
            sessions = [make_session(dense, args.threads)] + [make_session(onnx.load(o), args.threads)
                                                               for o, _, _ in runs.values()]
            feed = next(synthetic_dataset(session(dense), ModelGraph(dense).input_shapes, samples=1).batches(1))
            load = os.getloadavg()[0]
            timings = summarize(time_until_quiet(sessions, feed, args.rounds))
            load = max(load, os.getloadavg()[0])
            for (code, (out, info, prune_load)), t in zip(runs.items(), timings):
                macs = count_macs(ModelGraph(onnx.load(out))) / macs0
                latency = info["latency"]
                print(f"| {name} | {code} | {latency.get('allocation', 'latency ranking (no choice)')} | "
                      f"{info.get('round_to', '-')} | {macs:.3f} | "
                      f"{t['latency_ratio']:.3f} | {t['latency_noise']:.3f} | {latency.get('measured_latency_ratio', '-')} | "
                      f"{macs / t['latency_ratio']:.2f} | "
                      f"{prune_load:.1f} pruning, {load:.1f} timing |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
