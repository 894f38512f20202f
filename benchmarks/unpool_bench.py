"""Fashion-MNIST: image autoencoder decoders side by side (dense, deconv, unpool), precision@10/100.

Usage:
    python benchmarks/unpool_bench.py [--train 20000] [--queries 2000] [--epochs 5]
        [--filters 32,64,128] [--decoders dense,deconv,unpool] [--json OUT]

Every decoder is trained with the same settings (``ImagesConfig`` defaults:
code dimension 32, filters 32,64,128, whitening 0.25, shift/mirror
corruption, early stopping on a 5 % slice) except ``--epochs`` and
``--filters`` (the same for every decoder), on the first
``--train`` training images. Two query sets, each against an index of those
training codes, k = 100, a hit = same class:

* ``validation``: the last ``--queries`` training images (not trained on):
  the split a choice of decoder (the default) is made on;
* ``test``: the first ``--queries`` test images (reported, chosen on nothing).

Also printed: the mean per-pixel binary cross-entropy of the validation
images' reconstructions (the whole encoder -> decoder path, as novelty scores
use it) and the training time. One JSON line per decoder (also appended to
``--json``).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

from retrieval.ann import FlatIndex
from retrieval.config import ImagesConfig
from retrieval.encoders.autoencoder import ConvAutoencoder
from retrieval.sources.images import read_images

DATA = Path("/usr/share/datasets/fashion-mnist")


def precision(index_codes, index_labels, query_codes, query_labels, k: int = 100) -> tuple[float, float]:
    index = FlatIndex("cosine")
    index.add(index_codes)
    _, positions = index.search(query_codes, k)
    hits = index_labels[positions] == query_labels[:, None]
    return float(hits[:, :10].mean()), float(hits.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--filters", default=",".join(map(str, ImagesConfig.filters)))
    parser.add_argument("--decoders", default="dense,deconv,unpool")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    train = read_images(DATA / "train-images-idx3-ubyte.gz")
    test = read_images(DATA / "t10k-images-idx3-ubyte.gz")
    y_train = np.array([it.label for it in train.items])
    y_test = np.array([it.label for it in test.items])
    if args.train + args.queries > len(y_train):
        raise SystemExit(f"--train + --queries must be <= {len(y_train)}")
    X, y = train.pixels[:args.train], y_train[:args.train]
    X_val, y_val = train.pixels[-args.queries:], y_train[-args.queries:]
    X_test, y_test = test.pixels[:args.queries], y_test[:args.queries]
    c = ImagesConfig()
    for decoder in args.decoders.split(","):
        started = time.perf_counter()
        filters = [int(f) for f in args.filters.split(",")]
        encoder = ConvAutoencoder(filters=filters, code_dim=c.code_dim, decoder=decoder, epochs=args.epochs,
                                  batch_size=c.batch_size, learning_rate=c.learning_rate, noise=c.noise,
                                  patience=c.patience, whiten=c.whiten, augment=c.augment, mirror=c.mirror,
                                  seed=c.seed).fit(X)
        seconds = time.perf_counter() - started
        codes = encoder.transform(X)
        val = precision(codes, y, encoder.transform(X_val), y_val)
        tst = precision(codes, y, encoder.transform(X_test), y_test)
        bce = float(encoder.reconstruction_error(X_val).mean())
        row = {"decoder": decoder, "train": args.train, "queries": args.queries, "epochs_max": args.epochs, "filters": filters,
               "epochs_run": len(encoder.history_["loss"]), "fit_seconds": round(seconds, 1),
               "validation_p10": round(val[0], 4), "validation_p100": round(val[1], 4),
               "test_p10": round(tst[0], 4), "test_p100": round(tst[1], 4), "validation_bce": round(bce, 4),
               "params": encoder.encoder_.count_params() + encoder.decoder_.count_params()}
        print(json.dumps(row), flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
