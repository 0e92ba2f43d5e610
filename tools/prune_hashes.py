#!/usr/bin/env python3
"""Digests of pruned models and their outputs, to show a change leaves every result byte-identical:
run it in two checkouts and diff the JSON.

    PYTHONPATH=$PWD python tools/prune_hashes.py out.json
"""
import hashlib
import json
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from onnxprune import prune
from onnxprune.graph.constants import read_tensor
from onnxprune.load import zoo
from onnxprune.load.runtime import session
from make_chain import chain_model


def model_digest(model) -> str:
    """Nodes, interface and every weight's name, type and bytes: weights in external data (absolute
    paths included) are read where they live, as the pruner reads them, so a digest never depends on
    where a run's temporary files were."""
    digest = hashlib.sha256()
    for part in (*model.graph.node, *model.graph.input, *model.graph.output):
        digest.update(part.SerializeToString())
    for tensor in model.graph.initializer:
        value = np.ascontiguousarray(read_tensor(tensor))
        digest.update(f"{tensor.name}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


out = {}
cases = [(n, str(zoo.fetch(n))) for n in ["light_resnet50", "ppocr_det", "light_squeezenet", "light_inception_v1"]]
cases.append(("chain", chain_model(400)))
for name, m in cases:
    for crit in ["l2", "l1", "fpgm"]:
        r = prune(m, 0.3, criterion=crit, bench_rounds=0)
        sess = session(r.model)
        feed = {}
        rng = np.random.default_rng(0)
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        outs = sess.run(None, feed)
        out[f"{name}/{crit}"] = {"model": model_digest(r.model),
                                 "outputs": hashlib.sha256(b"".join(np.ascontiguousarray(o).tobytes() for o in outs)).hexdigest()[:16],
                                 "params": r.report["after"]["params"], "macs": r.report["after"]["macs"]}
        print(name, crit, out[f"{name}/{crit}"], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
