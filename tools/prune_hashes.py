#!/usr/bin/env python3
"""Digests of pruned models and their outputs, to show a change leaves every result byte-identical:
run it in two checkouts and diff the JSON.

    PYTHONPATH=$PWD python tools/prune_hashes.py out.json
"""
import hashlib
import json
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np, onnx, onnxruntime as ort
from onnxprune import prune
from onnxprune.load import zoo
from make_chain import chain_model
out = {}
cases = [(n, str(zoo.fetch(n))) for n in ["light_resnet50", "ppocr_det", "light_squeezenet", "light_inception_v1"]]
cases.append(("chain", chain_model(400)))
for name, m in cases:
    for crit in ["l2", "l1", "fpgm"]:
        r = prune(m, 0.3, criterion=crit, bench_rounds=0)
        b = r.model.SerializeToString()
        sess = ort.InferenceSession(b, providers=["CPUExecutionProvider"])
        feed = {}
        rng = np.random.default_rng(0)
        for i in sess.get_inputs():
            shape = [d if isinstance(d, int) else (1 if k == 0 else 64) for k, d in enumerate(i.shape)]
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        outs = sess.run(None, feed)
        out[f"{name}/{crit}"] = {"model": hashlib.sha256(b).hexdigest()[:16],
                                 "outputs": hashlib.sha256(b"".join(np.ascontiguousarray(o).tobytes() for o in outs)).hexdigest()[:16],
                                 "params": r.report["after"]["params"], "macs": r.report["after"]["macs"]}
        print(name, crit, out[f"{name}/{crit}"], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
