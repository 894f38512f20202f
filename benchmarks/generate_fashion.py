"""The decoder as a generator on Fashion-MNIST: build a (subset) index, draw the README's pictures, time them.

    python benchmarks/generate_fashion.py --home /tmp/gen-home --train 6000 --epochs 8 --filters 16,32,64 --out docs/

Builds index ``fashion-gen`` from a seeded sample of ``--train`` training
images labelled with the class names (unless it exists), then times
``generate --grid`` (principal plane, NumPy decoder), ``--between`` two items
of different classes and ``--sample``, and writes their PNGs into ``--out``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from retrieval import Index, Retriever, Store
from retrieval import generate
from retrieval.sources.images import read_idx

NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _shrink(path: Path) -> None:
    """128 colours are plenty for a grey grid and a 10-colour scatter: the README's PNG stays under 300 KB."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def _progress(task: str, done: int, total: int, info: dict) -> None:
    if task.startswith("ae: epoch") or done == total:
        print(f"  {time.strftime('%H:%M:%S')} {task} {done}/{total} {info or ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--home", required=True)
    parser.add_argument("--name", default="fashion-gen")
    parser.add_argument("--train", type=int, default=15000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="small enough for a few hundred steps: batch normalisation's moving statistics "
                             "need them (at 256 and 6,000 images the decoder drew one blurred mean garment)")
    parser.add_argument("--filters", default="32,64,128", help="channels of the strided convolutions")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--between", nargs=2, default=None, help="two item ids (default: a sneaker and an ankle boot)")
    args = parser.parse_args()
    store, out = Store(args.home), Path(args.out)
    if not store.path(args.name).exists():
        images = read_idx(Path(args.data) / "train-images-idx3-ubyte.gz")
        labels = read_idx(Path(args.data) / "train-labels-idx1-ubyte.gz")
        take = np.sort(np.random.default_rng(0).choice(len(images), size=args.train, replace=False))
        started = time.perf_counter()
        Index.build_images(images[take][..., None], labels=[NAMES[i] for i in labels[take]],
                           ids=[str(i) for i in take], name=args.name, store=store, epochs=args.epochs,
                           filters=tuple(int(f) for f in args.filters.split(",")), baselines="pca",
                           batch_size=args.batch_size, progress=_progress)
        print(f"build: {args.train} images, {time.perf_counter() - started:.1f} s")
    with Retriever(args.name, store) as retriever:
        started = time.perf_counter()
        result = generate.grid(retriever, out / "generate-grid.png", steps=args.steps)
        print(f"grid {args.steps}x{args.steps} over {result.info['items']} items (principal plane, "
              f"{result.info['explained_variance']:.2f} of the code variance): "
              f"{time.perf_counter() - started:.1f} s -> {result.out}")
        _shrink(result.out)
        if args.between:
            first, second = args.between
        else:
            labels = retriever.metadata.labels()
            ids = retriever.metadata.ids()
            first = ids[int(np.flatnonzero(labels == "Sneaker")[0])]
            second = ids[int(np.flatnonzero(labels == "Ankle boot")[0])]
        started = time.perf_counter()
        result = generate.between(retriever, first, second, steps=8, out=out / "generate-between.png")
        print(f"between {first} and {second}, 8 steps: {time.perf_counter() - started:.2f} s -> {result.out}")
        _shrink(result.out)
        started = time.perf_counter()
        result = generate.sample(retriever, 20, out / "generate-sample.png")
        print(f"sample 20: {time.perf_counter() - started:.2f} s -> {result.out}")
        _shrink(result.out)


if __name__ == "__main__":
    main()
