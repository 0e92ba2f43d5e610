"""NudeNet's training inputs from real colour face photos (issue 10, eighth pass): closer to what a user of a
face detector fine-tunes on (their own photos) than nudenet_320n_faces' grey 25x25 LFW faces upscaled.

The photos are sample images that PyPI wheels ship, read out of the wheels into onnxprune's wheel cache
(tasks.wheel_member), none of them the test faces (scikit-image's astronaut and cameraman):

- insightface 2.1: data/images/t1.jpg (a group photo, 6 faces), Tom_Hanks_54745.png (an aligned face);
- mahotas 1.4.19: demos/data/luispedro.jpg (a portrait); its lena.jpg is left out on purpose;
- ultralytics 8.4.190: assets/zidane.jpg (two men, one face seen), assets/bus.jpg (a street, small faces);
- matplotlib 3.11.2: mpl-data/sample_data/grace_hopper.jpg (a portrait).

The face boxes below are where the dense NudeNet 320n finds a face on each photo (x1 y1 x2 y2 in the photo's
pixels; read once with the task's decode, nothing labelled by hand); a head is its box widened by HEAD_MARGIN
on each side for hair and neck. Samples (unlabelled): half are the face-free crops of NudeNet.calibration,
half alternate between a crop (60-100% of each side, flipped at random) of a whole face photo and a
background photo with 1-3 heads pasted at random sizes (60-200 px) and places.
"""

from __future__ import annotations

import io

import numpy as np

import tasks
import tasks_nudenet

PHOTOS = {  # (package, version, member) -> face boxes found by the dense model
    ("insightface", "2.1", "insightface/data/images/t1.jpg"):
        [(56, 286, 182, 404), (1123, 298, 1231, 400), (740, 380, 848, 474), (454, 305, 570, 411),
         (275, 168, 381, 270), (900, 83, 1026, 201)],
    ("insightface", "2.1", "insightface/data/images/Tom_Hanks_54745.png"): [(2, 11, 91, 112)],
    ("mahotas", "1.4.19", "mahotas/demos/data/luispedro.jpg"): [(35, 102, 221, 326)],
    ("ultralytics", "8.4.190", "ultralytics/assets/zidane.jpg"): [(895, 118, 1068, 287)],
    ("ultralytics", "8.4.190", "ultralytics/assets/bus.jpg"): [(104, 415, 158, 466)],
    ("matplotlib", "3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"): [(169, 142, 359, 342)],
}
HEAD_MARGIN = 0.25  # share of a face box's side added on each side


def photo(package: str, version: str, member: str) -> np.ndarray:
    """One photo of a wheel as an HxWx3 uint8 array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(tasks.wheel_member(package, version, member))).convert("RGB"))


def heads(photos: dict[tuple, np.ndarray]) -> list[np.ndarray]:
    """Every face box of PHOTOS widened by HEAD_MARGIN, cut out of its photo."""
    out = []
    for key, boxes in PHOTOS.items():
        img = photos[key]
        h, w = img.shape[:2]
        for x1, y1, x2, y2 in boxes:
            mx, my = int((x2 - x1) * HEAD_MARGIN), int((y2 - y1) * HEAD_MARGIN)
            out.append(img[max(0, y1 - my):min(h, y2 + my), max(0, x1 - mx):min(w, x2 + mx)])
    return out


class NudeNetPhotos(tasks_nudenet.NudeNet):
    """NudeNet scored as tasks_nudenet.NudeNet (the astronaut's and cameraman's faces), trained on real colour face
    photos (module docstring). Registered as "nudenet_320n_photos"; the zoo model stays nudenet_320n."""

    def calibration(self, n=32):
        from PIL import Image

        plain = super().calibration(n - n // 2)["images"]
        photos = {key: photo(*key) for key in PHOTOS}
        whole, cut = list(photos.values()), heads(photos)
        rng = np.random.default_rng(11)
        out = []
        for i in range(n // 2):
            if i % 2 == 0:  # a crop of a whole face photo, as a user's own pictures
                img = whole[(i // 2) % len(whole)]
                h, w = img.shape[:2]
                ch, cw = max(int(h * rng.uniform(0.6, 1)), 32), max(int(w * rng.uniform(0.6, 1)), 32)
                y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                crop = img[y0:y0 + ch, x0:x0 + cw]
                out.append(self.letterbox(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)))
                continue
            bg = tasks.skimage_photo(self.CALIB_PHOTOS[i % len(self.CALIB_PHOTOS)]).copy()
            bh, bw = bg.shape[:2]
            for _ in range(int(rng.integers(1, 4))):
                head = cut[int(rng.integers(0, len(cut)))]
                head = head[:, ::-1] if rng.random() < 0.5 else head
                side = int(rng.integers(60, min(200, bh - 1, bw - 1)))  # the head's longer side
                s = side / max(head.shape[:2])
                hh, hw = max(8, int(head.shape[0] * s)), max(8, int(head.shape[1] * s))
                pasted = np.asarray(Image.fromarray(np.ascontiguousarray(head)).resize((hw, hh), Image.BILINEAR))
                y0, x0 = int(rng.integers(0, bh - hh)), int(rng.integers(0, bw - hw))
                bg[y0:y0 + hh, x0:x0 + hw] = pasted
            out.append(self.letterbox(bg))
        return {"images": np.concatenate([plain, np.stack(out)])}


__all__ = ["HEAD_MARGIN", "NudeNetPhotos", "PHOTOS", "heads", "photo"]
