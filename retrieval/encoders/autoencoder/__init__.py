"""Keras deep autoencoders: a dense one for documents, a convolutional one for images.

Encoder and decoder are separate named Keras models joined into the
autoencoder for training and saved as ``encoder.keras`` and ``decoder.keras``
(the decoder gives reconstruction errors: novelty); they load with Keras'
safe mode (no Lambda layers, no code).

Modules: ``models`` (the Keras graphs), ``training`` (data pipelines and
training phases), ``numpy_forward`` (the dense encoder in NumPy, for fast
queries), ``base`` (:class:`KerasAutoencoder`: codes, inference, novelty,
persistence), ``text`` and ``conv`` (the two autoencoders). Importing this
package imports TensorFlow, with its start-up notes silenced.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed.

    TensorFlow's C++ start-up notes ("oneDNN custom operations are on") are
    written before its logging reads TF_CPP_MIN_LOG_LEVEL; on the command
    line they would sit between the user and a one-line error.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (notebooks, captured streams)
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from .base import BINARIZE_MODES, PRETRAIN_MODES, KerasAutoencoder  # noqa: E402
from .conv import ConvAutoencoder  # noqa: E402
from .text import TextAutoencoder  # noqa: E402
from .training import _neighbour_targets, _partial_whitening  # noqa: E402

__all__ = ["BINARIZE_MODES", "PRETRAIN_MODES", "ConvAutoencoder", "KerasAutoencoder", "TextAutoencoder",
           "_neighbour_targets", "_partial_whitening"]
