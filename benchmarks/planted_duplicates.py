"""Planted near-duplicates: image folders with known copies, for ``duplicates_bench.py`` (and a look by hand).

Two halves, written as image files into one folder per half and split:

* ``fashion``: Fashion-MNIST training images (28 x 28 grey, PNG), exact
  pixel duplicates of the data set dropped first so that only planted
  copies are true duplicates.
* ``photo``: 48 x 48 non-overlapping tiles of the real photographs that ship
  offline with scikit-image (``skimage.data``) and scikit-learn
  (``load_sample_images``): see :data:`PHOTOS`. Tiles of almost one colour
  (the black corners of ``retina``, the sky of ``hubble_deep_field``) are
  dropped: they are exact duplicates of each other.

Each split draws its own items (``val`` and ``test`` share none) and copies
``copies`` of them, each copy with one of :data:`TRANSFORMS` in turn.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
#: Real photographs shipped with scikit-image; ``cat`` (= ``chelsea``) and ``motorcycle_right`` (a stereo twin
#: of the left view) are left out: they would be unplanted duplicates. Synthetic images are left out too.
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
          "hubble_deep_field", "immunohistochemistry", "moon", "retina", "rocket", "page", "text")
TILE = 48
TRANSFORMS = ("jpeg", "resize", "crop", "brightness", "shift")


def fashion_images() -> np.ndarray:
    """Fashion-MNIST training images without exact pixel duplicates (first kept), ``(n, 28, 28)`` uint8."""
    from retrieval.sources.images import read_idx

    images = read_idx(FASHION)
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    return images[np.sort(first)]


def photo_tiles() -> tuple[np.ndarray, list[str]]:
    """Non-overlapping ``TILE`` x ``TILE`` RGB tiles of :data:`PHOTOS` and scikit-learn's two sample photos."""
    import warnings

    import skimage.data
    from sklearn.datasets import load_sample_images

    warnings.simplefilter("ignore")
    named = [(name, getattr(skimage.data, name)()) for name in PHOTOS]
    named.append(("motorcycle_left", skimage.data.stereo_motorcycle()[0]))
    sample = load_sample_images()
    named += [(Path(f).stem, img) for f, img in zip(sample.filenames, sample.images)]
    tiles, names = [], []
    for name, img in named:
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(img.max(), 1))).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img[..., :3]
        for y in range(0, img.shape[0] - TILE + 1, TILE):
            for x in range(0, img.shape[1] - TILE + 1, TILE):
                tile = img[y:y + TILE, x:x + TILE]
                if tile.std() < 8:  # almost one colour: duplicates of each other, not planted
                    continue
                tiles.append(tile)
                names.append(f"{name}-{y}-{x}")
    return np.stack(tiles), names


def transform(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One near-duplicate copy of ``img`` (uint8, grey or RGB): ``(encoded bytes, file suffix)``."""
    pil = Image.fromarray(img)
    w, h = pil.size
    if kind == "jpeg":
        buf = io.BytesIO()
        pil.convert("RGB" if img.ndim == 3 else "L").save(buf, format="JPEG", quality=int(rng.integers(40, 76)))
        return buf.getvalue(), ".jpg"
    if kind == "resize":
        scale = float(rng.choice([rng.uniform(0.6, 0.85), rng.uniform(1.3, 2.0)]))
        pil = pil.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.BILINEAR)
    elif kind == "crop":
        # a small crop: up to ~8 % of the side taken off, unevenly
        most = max(1, round(0.08 * w))
        left, top = int(rng.integers(0, most + 1)), int(rng.integers(0, most + 1))
        right, bottom = int(rng.integers(0, most + 1 - left)), int(rng.integers(0, most + 1 - top))
        if left + right + top + bottom == 0:
            left = 1
        pil = pil.crop((left, top, w - right, h - bottom))
    elif kind == "brightness":
        factor = float(rng.choice([rng.uniform(0.65, 0.85), rng.uniform(1.15, 1.4)]))
        pil = ImageEnhance.Brightness(pil).enhance(factor)
    elif kind == "shift":
        dx, dy = [int(v) for v in rng.choice([-1, 1], size=2)]
        if rng.random() < 0.5:
            dy = 0
        else:
            dx = 0
        arr = np.asarray(pil)
        shifted = np.roll(arr, (dy, dx), axis=(0, 1))
        # the row or column rolled in from the other side repeats its neighbour instead
        if dy == 1:
            shifted[0] = shifted[1]
        elif dy == -1:
            shifted[-1] = shifted[-2]
        if dx == 1:
            shifted[:, 0] = shifted[:, 1]
        elif dx == -1:
            shifted[:, -1] = shifted[:, -2]
        pil = Image.fromarray(shifted)
    else:
        raise ValueError(kind)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue(), ".png"


def write_split(images: np.ndarray, names: list[str], chosen: np.ndarray, copied: np.ndarray, out: Path,
                seed: int) -> list[dict]:
    """Write the items ``chosen`` and copies of ``copied`` (a subset) into ``out``; returns the planted pairs."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i in chosen:
        Image.fromarray(images[i]).save(out / f"{names[i]}.png")
    pairs = []
    for n, i in enumerate(copied):
        kind = TRANSFORMS[n % len(TRANSFORMS)]
        data, suffix = transform(images[i], kind, rng)
        copy = f"{names[i]}~{kind}{suffix}"
        (out / copy).write_bytes(data)
        pairs.append({"original": f"{names[i]}.png", "copy": copy, "transform": kind})
    (out.parent / f"{out.name}.pairs.json").write_text(json.dumps(pairs, indent=1))
    return pairs


def make(root: Path, *, fashion_items: dict, photo_items: dict, seed: int = 0) -> dict:
    """Write the planted sets under ``root``: ``{(half, split): (folder, pairs)}``.

    Args:
        root: Output folder (``root/fashion-val/``, ``root/fashion-test/``, ...).
        fashion_items, photo_items: ``{split: (items in the collection, of which copied)}``.
        seed: Draws of items and transforms (each split its own stream).
    """
    out = {}
    fashion = fashion_images()
    photos, photo_names = photo_tiles()
    halves = {"fashion": (fashion, [f"f{i:05d}" for i in range(len(fashion))], fashion_items),
              "photo": (photos, photo_names, photo_items)}
    for h, (half, (images, names, counts)) in enumerate(halves.items()):
        rng = np.random.default_rng([seed, h])
        order = rng.permutation(len(images))
        start = 0
        for s, (split, (items, copies)) in enumerate(sorted(counts.items(), reverse=True)):  # test, then val
            if start + items > len(images):
                raise ValueError(f"{half}: {items} items for {split} exceed the {len(images) - start} left")
            chosen = np.sort(order[start:start + items])
            start += items
            copied = rng.choice(chosen, size=copies, replace=False)
            folder = root / f"{half}-{split}"
            pairs = write_split(images, names, chosen, copied, folder, seed=seed * 100 + h * 10 + s)
            out[(half, split)] = (folder, pairs)
    return out


if __name__ == "__main__":  # pragma: no cover - a look by hand
    import sys

    tiles, names = photo_tiles()
    print(len(fashion_images()), "Fashion-MNIST images without exact duplicates;", len(tiles), "photo tiles")
    if len(sys.argv) > 1:
        make(Path(sys.argv[1]), fashion_items={"val": (3000, 500), "test": (10000, 1000)},
             photo_items={"val": (700, 300), "test": (1900, 1000)})
