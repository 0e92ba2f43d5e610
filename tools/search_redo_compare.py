#!/usr/bin/env python3
"""Re-make some candidates of a finished search on another executor and compare them byte for byte.

    python tools/search_redo_compare.py /tmp/lat/search10/work/serial --ids c007,c009 --workers 2 \
        --out /tmp/lat/search10/work/redo-local2

The finished search folder is copied to --out, the listed candidates' files are deleted there, and
the search is resumed with the recorded settings (search.json) on `--workers K` local processes (or
`--ray local`): only those candidates are made again, then the whole search is timed again as a
resumed search does. Prints, per re-made candidate, whether its model and quality match the original
(sha256 of the .onnx), and both fronts. A check that the executor does not change what is made,
cheaper than a second full search.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from onnxprune.search import search
from onnxprune.search.executors import LocalExecutor, RayExecutor


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="a finished search's folder")
    ap.add_argument("--ids", required=True, help="candidates to make again, comma-separated")
    ap.add_argument("--out", required=True, help="where the copy goes (replaced)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray", action="store_true", help="a local Ray instance of --workers CPUs instead")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args(argv)
    source, out = Path(args.folder), Path(args.out)
    settings = json.loads((source / "search.json").read_text())
    original = json.loads((source / "pareto.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    ids = args.ids.split(",")
    for cid in ids:
        for suffix in (".onnx", ".json"):
            (out / "candidates" / f"{cid}{suffix}").unlink()
    executor = RayExecutor("local", args.workers) if args.ray else LocalExecutor(args.workers)
    start = time.perf_counter()
    try:
        done = search(settings["model"], settings["calib"], out, budget=settings["budget"], data=settings["data"],
                      seed=settings["seed"], space=settings.get("space"), rounds=args.rounds, workers=executor,
                      metric=settings.get("metric"))
    finally:
        executor.close()
    quality = {c["id"]: c["quality"] for c in original["candidates"]}
    again = {c["id"]: c["quality"] for c in done["candidates"]}
    same = 0
    for cid in ids:
        a, b = source / "candidates" / f"{cid}.onnx", out / "candidates" / f"{cid}.onnx"
        match = b.exists() and digest(a) == digest(b) and quality[cid] == again.get(cid)
        same += match
        print(f"{cid}: {'same model and quality' if match else 'DIFFERENT'} ({digest(a)} / "
              f"{digest(b) if b.exists() else 'missing'})")
    print(f"{same} of {len(ids)} re-made candidates identical; {time.perf_counter() - start:.0f} s; "
          f"failed: {done['failed']}")
    print(f"front, original: {' '.join(original['front'])} (tie width {original['tie_width']})")
    print(f"front, re-made and re-timed: {' '.join(done['front'])} (tie width {done['tie_width']})")
    return 0 if same == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
