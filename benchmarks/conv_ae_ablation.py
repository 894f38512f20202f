"""Fashion-MNIST: train one ConvAutoencoder variant, print precision@10/100.

Usage: python benchmarks/conv_ae_ablation.py '{"epochs": 12, "augment": 0.07}' [--validation]
(keyword arguments of retrieval.encoders.autoencoder.ConvAutoencoder, as JSON;
--validation: index 50,000 training images, query with the other 10,000).
Prints the figures for several whitening exponents of the same codes (0 = centring only).
"""
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from retrieval.encoders.autoencoder import ConvAutoencoder, _partial_whitening
from retrieval.sources.images import read_images
from retrieval.ann import FlatIndex

warnings.simplefilter("ignore")
DATA = Path("/usr/share/datasets/fashion-mnist")
train, test = read_images(DATA / "train-images-idx3-ubyte.gz"), read_images(DATA / "t10k-images-idx3-ubyte.gz")
y_train = np.array([it.label for it in train.items])
y_test = np.array([it.label for it in test.items])
kwargs = json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")
if "--validation" in sys.argv:
    # Choose settings without the test images: index the first 50,000
    # training images, query with the last 10,000.
    from types import SimpleNamespace

    test = SimpleNamespace(pixels=train.pixels[50_000:])
    y_test = y_train[50_000:]
    train = SimpleNamespace(pixels=train.pixels[:50_000])
    y_train = y_train[:50_000]
started = time.perf_counter()
encoder = ConvAutoencoder(**kwargs).fit(train.pixels)
seconds = time.perf_counter() - started
undo = np.linalg.inv(encoder.code_projection_)
centred_train, centred_test = encoder.transform(train.pixels) @ undo, encoder.transform(test.pixels) @ undo
for power in sorted({0.0, 0.15, 0.25, 0.35, 0.5, encoder.whiten}):
    project = _partial_whitening(centred_train, power)
    index = FlatIndex("cosine")
    index.add(centred_train @ project)
    _, positions = index.search(centred_test @ project, 100)
    hits = y_train[positions] == y_test[:, None]
    print(f"{kwargs} whiten {power}: p@10 {hits[:, :10].mean():.4f} p@100 {hits.mean():.4f} "
          f"fit {seconds:.0f} s, {len(encoder.history_['loss'])} epochs", flush=True)
