"""`onnxprune search MODEL --calib D [--data V] --budget N -o DIR`: pruned candidates and their Pareto
front of measured latency against quality (accuracy with labelled --data, else the worst output's
cosine). Resumes from DIR when run again with the same settings. Exit 0, or 2 for bad input or usage.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from onnxprune.cli.args import add_verbosity

    p = sub.add_parser("search", help="explore pruning settings; write the Pareto front of latency vs quality")
    p.add_argument("model", help="the .onnx model")
    p.add_argument("--calib", required=True, help="calibration data (.npz) for pruning and quantization")
    p.add_argument("--data", metavar="DATA.npz", help="held-out data for quality ('labels' gives accuracy; "
                                                      "default: the calibration data)")
    p.add_argument("--budget", type=int, default=16, help="candidates to make and measure (default 16)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the candidates and pareto.json")
    p.add_argument("--workers", type=int, default=1, help="worker processes for pruning and fidelity (default 1)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the candidates as Ray tasks on this cluster ('local' starts "
                                                    "one with --workers CPUs); needs pip install 'onnxprune[ray]'")
    p.add_argument("--metric", metavar="MODULE:FUNC", help="your task metric: a function of an .onnx path "
                   "returning one number, higher is better (module:function or file.py:function); ranks the front")
    p.add_argument("--space", metavar="DIMS", help="dimensions to explore, comma-separated, of targets,scopes,"
                   "depth,int8 (default: all; depth = residual units removed before width pruning, where the "
                   "model has any)")
    p.add_argument("--no-int8", action="store_true", help="leave int8 quantization out of the search")
    p.add_argument("--rounds", type=int, default=40,
                   help="rounds of the latency pass, each timing dense and every candidate once (default 40)")
    p.add_argument("--seed", type=int, default=0, help="which candidates a budget picks (default 0)")
    p.add_argument("--input-shape", action="append", metavar="NAME:DxD..", help="shape for a dynamic input")
    add_verbosity(p)


def run(args) -> int:
    import os

    from onnxprune.cli.args import parse_shapes
    from onnxprune.errors import BadInputError
    from onnxprune.search import search
    from onnxprune.search.executors import make_executor
    from onnxprune.search.space import parse_space

    if os.path.isfile(args.output):
        raise BadInputError(f"-o {args.output}: is a file; search writes a folder of candidates")
    cpus = os.cpu_count() or 1
    if args.workers > cpus:
        raise BadInputError(f"--workers {args.workers}: this machine has {cpus} cores")
    space = [d for d in parse_space(args.space) if not (args.no_int8 and d == "int8")]
    executor = make_executor(args.ray, args.workers)  # imports ray only for --ray
    try:
        done = search(args.model, args.calib, args.output, budget=args.budget, data=args.data,
                      workers=executor, seed=args.seed, space=space,
                      input_shapes=parse_shapes(args.input_shape), rounds=args.rounds, metric=args.metric)
    finally:
        executor.close()
    if not args.quiet:
        by_id = {c["id"]: c for c in done["candidates"]}
        print(f"{len(done['candidates'])} candidates, {len(done['front'])} on the front "
              f"({os.path.join(args.output, 'pareto.json')}):")
        for cid in done["front"]:
            c = by_id[cid]
            print(f"  {cid}  {c['label']:<33} latency {c['latency_ratio']:.3f}  MACs {c['macs']:.3f}  "
                  f"{c['quality_name']} {c['quality']:.4f}")
        for failure in done["failed"]:
            print(f"  {failure['id']} failed twice: {failure['error']}")
    return 0
