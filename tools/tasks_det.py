"""ddddocr's character detector (`ddddocr/common_det.onnx`, a YOLOX-style model FACTS.md names) as a task.

Click captchas: a crop of a scikit-image sample photo, 3-6 glyphs (Latin, Greek and Cyrillic letters and
digits: the DejaVu fonts this machine has) in random colours, sizes and rotations, some with a white
outline, pasted at random places. Each glyph's box is known (its alpha channel after rotation), so the
dense model's recall of what was drawn is checked (tests/test_tasks.py); the score is the F1 of the
pruned model's boxes against the dense model's (IoU >= 0.5), as for the other detectors.

Preprocessing and decoding are ddddocr 1.6.1's (`core/detection_engine.py`): BGR, scaled into a 416x416
canvas of grey 114 at the top left, float 0-255 unnormalized; boxes from the three strides' grids,
score = objectness x class, kept above 0.1, class-agnostic NMS at IoU 0.45. Calibration images come from
the same generator on another seed stream (unlabelled, disjoint from the test images).
"""

from __future__ import annotations

import random

import numpy as np

import tasks

SIZE = 416
CANVAS = 344                 # a click captcha's side before ddddocr scales it to 416
GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnpqrt2345678ΩΣΨΦЖЯДБ"
PHOTOS = ("coffee", "chelsea", "rocket", "motorcycle_left", "grass", "brick", "astronaut", "horse", "hubble")


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """YOLOX's anchor-free grid: (cell x, cell y) and stride per output row, strides 8, 16, 32."""
    cells, strides = [], []
    for s in (8, 16, 32):
        n = SIZE // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        cells.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode(out: np.ndarray, score_thr: float = 0.1, nms_iou: float = 0.45) -> list[tuple[int, np.ndarray]]:
    """ddddocr's get_bbox on one image's (3549, 6) output: (0, box x1 y1 x2 y2 in input pixels) after NMS."""
    cells, strides = _grid()
    xy = (out[:, :2] + cells) * strides
    wh = np.exp(out[:, 2:4]) * strides
    scores = out[:, 4] * out[:, 5]
    keep = scores > score_thr
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)[keep]
    order = list(np.argsort(-scores[keep]))
    found = []
    while order:
        i = order.pop(0)
        found.append((0, boxes[i]))
        if order:
            ious = tasks.iou_matrix(boxes[i], boxes[order])[0]
            order = [j for j, v in zip(order, ious) if v <= nms_iou]
    return found


class DdddocrDet(tasks.Task):
    name = "ddddocr_det"
    metric = "char box F1 vs dense %"
    reference = "dense"
    default_eval_n = 64

    def input_shapes(self):
        return {"images": (1, 3, SIZE, SIZE)}

    def captchas(self, n: int, seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """n BGR canvases and the drawn glyphs' boxes (x1 y1 x2 y2, canvas pixels)."""
        from PIL import Image, ImageDraw, ImageFont

        rng = random.Random(seed)
        fonts = tasks.find_fonts()
        images, drawn = [], []
        for _ in range(n):
            photo = tasks.skimage_photo(rng.choice(PHOTOS))
            photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
            h, w = photo.shape[:2]
            side = min(h, w, rng.randint(CANVAS // 2, 2 * CANVAS))
            y0, x0 = rng.randint(0, h - side), rng.randint(0, w - side)
            img = Image.fromarray(np.ascontiguousarray(photo[y0:y0 + side, x0:x0 + side])).resize((CANVAS, CANVAS))
            boxes = []
            for _ in range(rng.randint(3, 6)):
                size = rng.randint(26, 48)
                font = ImageFont.truetype(rng.choice(fonts), size) if fonts else ImageFont.load_default(size=size)
                tile = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
                colour = tuple(rng.randint(0, 255) for _ in range(3)) + (255,)
                ImageDraw.Draw(tile).text((size // 2, size // 3), rng.choice(GLYPHS), font=font, fill=colour,
                                          stroke_width=rng.choice((0, 1, 2)), stroke_fill=(255, 255, 255, 255))
                tile = tile.rotate(rng.uniform(-40, 40))
                px, py = rng.randint(0, CANVAS - 2 * size), rng.randint(0, CANVAS - 2 * size)
                img.paste(tile, (px, py), tile)
                bx = tile.getchannel("A").getbbox()
                if bx:
                    boxes.append(np.array([px + bx[0], py + bx[1], px + bx[2], py + bx[3]], np.float32))
            images.append(np.asarray(img)[..., ::-1].copy())  # BGR, as cv2.imdecode gives it
            drawn.append(boxes)
        return images, drawn

    @staticmethod
    def preprocess(img: np.ndarray) -> np.ndarray:
        """ddddocr's preproc: scale into the 416 canvas (top left), grey 114 elsewhere, CHW float 0-255."""
        from PIL import Image

        r = min(SIZE / img.shape[0], SIZE / img.shape[1])
        pad = np.full((SIZE, SIZE, 3), 114, np.uint8)
        resized = np.asarray(Image.fromarray(img).resize((int(img.shape[1] * r), int(img.shape[0] * r)),
                                                         Image.BILINEAR))
        pad[:resized.shape[0], :resized.shape[1]] = resized
        return pad.transpose(2, 0, 1).astype(np.float32)

    def evaluation(self, n=None):
        images, drawn = self.captchas(n or self.default_eval_n, seed=11)
        scale = SIZE / CANVAS
        x = np.stack([self.preprocess(im) for im in images])
        return tasks.EvalSet(tasks.batched("images", x, 1), [[b * scale for b in d] for d in drawn],
                             f"{len(x)} captchas, {sum(map(len, drawn))} glyphs")

    def calibration(self, n=32):
        images, _ = self.captchas(n, seed=1011)
        return {"images": np.stack([self.preprocess(im) for im in images])}

    def predict(self, sess, ev):
        return [decode(o[0][0]) for o in self.run(sess, ev)]

    def score(self, preds, ev, dense_preds):
        return {"score": 100 * tasks.match_f1(dense_preds, preds), "boxes": float(sum(map(len, preds))),
                "dense boxes": float(sum(map(len, dense_preds)))}


DET_TASKS = {"ddddocr_det": DdddocrDet}
