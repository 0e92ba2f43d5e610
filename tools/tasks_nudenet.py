"""NudeNet's task: faces of scikit-image's sample photos pasted on other photos, detections decoded as
nudenet does, F1 of the face detections against the dense model's. The task protocol and shared helpers
are in tools/tasks.py."""

from __future__ import annotations

import ast
import io

import numpy as np
import onnx

from onnxprune.load import zoo
from tasks import SKIMAGE_WHEEL, EvalSet, Task, batched, iou_matrix, match_f1, skimage_photo, wheel_member, with_static_dims


def yolo_nms(out: np.ndarray, conf: float = 0.2, nms_iou: float = 0.45) -> list[tuple[int, float, np.ndarray]]:
    """A YOLOv8 output (1, 4 + classes, anchors) as (class, score, box x1 y1 x2 y2 in input pixels) after
    per-class NMS, class by class, best first within a class (nudenet: score 0.2, IoU 0.45)."""
    rows = out[0].T
    scores, classes = rows[:, 4:].max(1), rows[:, 4:].argmax(1)
    keep = scores >= conf
    rows, scores, classes = rows[keep], scores[keep], classes[keep]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    found = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        idx = idx[np.argsort(-scores[idx])]
        while len(idx):
            i = idx[0]
            found.append((int(c), float(scores[i]), boxes[i]))
            idx = idx[1:][iou_matrix(boxes[i], boxes[idx[1:]])[0] <= nms_iou]
    return found


class NudeNet(Task):
    """Faces of scikit-image's astronaut and cameraman, whole and as crops, flips and rescales pasted on
    other sample photos; detections decoded as nudenet does; F1 of the face detections against the
    dense model's (IoU >= 0.5, same class)."""

    name = "nudenet_320n"
    metric = "face F1 vs dense %"
    reference = "dense"
    default_eval_n = 16
    SIZE = 320
    FACES = ("FACE_FEMALE", "FACE_MALE")
    BACKGROUNDS = ("coffee", "chelsea", "rocket", "motorcycle_left", "grass", "brick")
    CALIB_PHOTOS = ("coffee", "chelsea", "rocket", "motorcycle_left", "horse", "page", "immunohistochemistry",
                    "retina", "hubble", "gravel")

    def model(self) -> onnx.ModelProto:
        return with_static_dims(super().model(), {"images": {2: self.SIZE, 3: self.SIZE}})

    def input_shapes(self):
        return {"images": (1, 3, self.SIZE, self.SIZE)}

    def letterbox(self, img: np.ndarray) -> np.ndarray:
        """nudenet's preprocessing: pad right/bottom to a square, resize to 320, RGB, /255, CHW."""
        from PIL import Image

        h, w = img.shape[:2]
        side = max(h, w)
        pad = np.zeros((side, side, 3), np.uint8)
        pad[:h, :w] = img[..., :3]
        x = np.asarray(Image.fromarray(pad).resize((self.SIZE, self.SIZE), Image.BILINEAR), np.float32) / 255.0
        return x.transpose(2, 0, 1)

    def face_ids(self) -> set[int]:
        meta = {p.key: p.value for p in onnx.load(zoo.fetch(self.name), load_external_data=False).metadata_props}
        names = ast.literal_eval(meta["names"])
        return {k for k, v in names.items() if v in self.FACES}

    def _images(self, n: int) -> list[np.ndarray]:
        """Whole photos (astronaut, cameraman, flipped) then composites: 1-3 face crops at random scales,
        sides and positions pasted on a background photo."""
        astro, cam = skimage_photo("astronaut"), skimage_photo("camera")
        out = [astro, astro[:, ::-1], cam, cam[:, ::-1]]
        return (out + self.composites(n - len(out), np.random.default_rng(31), first=len(out)))[:n]

    def composites(self, n: int, rng: np.random.Generator, first: int = 0) -> list[np.ndarray]:
        """n background photos (BACKGROUNDS in turn, from the `first`) with 1-3 heads pasted on each."""
        heads = self.heads()
        return [self.paste_heads(skimage_photo(self.BACKGROUNDS[(first + i) % len(self.BACKGROUNDS)]).copy(), heads, rng)
                for i in range(max(n, 0))]

    @staticmethod
    def heads() -> list[np.ndarray]:
        astro, cam = skimage_photo("astronaut"), skimage_photo("camera")
        return [astro[20:230, 130:300], cam[40:200, 200:360]]  # the two faces with some hair and neck

    @staticmethod
    def paste_heads(bg: np.ndarray, heads: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """1-3 of the heads, each flipped or not and rescaled 0.5-1.3x, pasted at random places on bg (in place)."""
        from PIL import Image

        bh, bw = bg.shape[:2]
        for _ in range(int(rng.integers(1, 4))):
            head = heads[int(rng.integers(0, 2))]
            head = head[:, ::-1] if rng.random() < 0.5 else head
            s = rng.uniform(0.5, 1.3)
            hh, hw = min(bh - 1, int(head.shape[0] * s)), min(bw - 1, int(head.shape[1] * s))
            crop = np.asarray(Image.fromarray(np.ascontiguousarray(head)).resize((hw, hh), Image.BILINEAR))
            y0, x0 = int(rng.integers(0, bh - hh)), int(rng.integers(0, bw - hw))
            bg[y0:y0 + hh, x0:x0 + hw] = crop
        return bg

    def evaluation(self, n=None):
        x = np.stack([self.letterbox(im) for im in self._images(n or self.default_eval_n)])
        return EvalSet(batched("images", x, 1), [None] * len(x), f"{len(x)} images")

    def calibration(self, n=32):
        """Crops (50-100% of each side) and flips of photos without faces: disjoint from the test images."""
        rng = np.random.default_rng(0)
        photos = [skimage_photo(p) for p in self.CALIB_PHOTOS]
        out = []
        for i in range(n):
            img = photos[i % len(photos)]
            h, w = img.shape[:2]
            ch, cw = max(int(h * rng.uniform(0.5, 1)), 32), max(int(w * rng.uniform(0.5, 1)), 32)
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = img[y0:y0 + ch, x0:x0 + cw]
            out.append(self.letterbox(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)))
        return {"images": np.stack(out)}

    @staticmethod
    def decode(out: np.ndarray, conf: float = 0.2, nms_iou: float = 0.45) -> list[tuple[int, np.ndarray]]:
        """(class, box x1 y1 x2 y2 in input pixels) after per-class NMS (nudenet: score 0.2, IoU 0.45)."""
        return [(c, box) for c, _, box in yolo_nms(out, conf, nms_iou)]

    def predict(self, sess, ev):
        faces = self.face_ids()
        return [[d for d in self.decode(o[0]) if d[0] in faces] for o in self.run(sess, ev)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * match_f1(dense_preds, preds), "faces": float(sum(map(len, preds))),
                "dense faces": float(sum(map(len, dense_preds)))}


class NudeNetFaces(NudeNet):
    """NudeNet scored as above, calibrated on data that holds faces, as a user of a face detector would
    calibrate it: half the samples are the face-free crops above, half are backgrounds with 1-3 faces of
    scikit-image's LFW subset (other people than the test faces; 25x25 grey crops upscaled to 60-160 px)
    pasted at random places. Unlabelled; disjoint from the evaluation images."""

    # name stays "nudenet_320n" (the zoo model); the task is registered as "nudenet_320n_faces"

    def calibration(self, n=32):
        from PIL import Image

        plain = super().calibration(n - n // 2)["images"]
        lfw = np.load(io.BytesIO(wheel_member(*SKIMAGE_WHEEL, "skimage/data/lfw_subset.npy")))[:100]  # the faces
        rng = np.random.default_rng(7)
        out = []
        for i in range(n // 2):
            bg = skimage_photo(self.CALIB_PHOTOS[i % len(self.CALIB_PHOTOS)]).copy()
            bh, bw = bg.shape[:2]
            for _ in range(int(rng.integers(1, 4))):
                s = int(rng.integers(60, min(160, bh - 1, bw - 1)))
                face = (np.clip(lfw[int(rng.integers(0, len(lfw)))], 0, 1) * 255).astype(np.uint8)
                crop = np.asarray(Image.fromarray(face).resize((s, s), Image.BICUBIC))
                y0, x0 = int(rng.integers(0, bh - s)), int(rng.integers(0, bw - s))
                bg[y0:y0 + s, x0:x0 + s] = crop[..., None]
            out.append(self.letterbox(bg))
        return {"images": np.concatenate([plain, np.stack(out)])}
