"""Keras deep autoencoders: a dense one for documents, a convolutional one for images.

Encoder and decoder are separate named Keras models joined into the
autoencoder for training and saved as ``encoder.keras`` and ``decoder.keras``
(the decoder gives reconstruction errors: novelty); they load with Keras'
safe mode (no Lambda layers, no code).

Modules: ``models`` (the Keras graphs), ``training`` (data pipelines and
training phases), ``numpy_graph`` (saved encoders and decoders run in NumPy:
queries and ``add``), ``numpy_forward`` (a fitted dense encoder in NumPy),
``base`` (:class:`KerasAutoencoder`: codes, inference, novelty,
persistence), ``text`` and ``conv`` (the two autoencoders). Importing this
package imports neither TensorFlow nor Keras: training (and only training,
or a fallback for a layer NumPy does not run) imports them, with
TensorFlow's start-up notes silenced.
"""
from __future__ import annotations

import os
import sys

from ..._lazy import LazyModule

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed.

    TensorFlow's C++ start-up notes ("oneDNN custom operations are on") are
    written before its logging reads TF_CPP_MIN_LOG_LEVEL; on the command
    line they would sit between the user and a one-line error.
    """
    if "tensorflow" in sys.modules:
        return
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


#: ``keras`` in the modules a query imports: loaded (TensorFlow quietly first) on first use.
_lazy_keras = LazyModule("keras", before=_import_tensorflow_quietly)


from .base import BINARIZE_MODES, PRETRAIN_MODES, KerasAutoencoder  # noqa: E402
from .conv import ConvAutoencoder  # noqa: E402
from .text import TextAutoencoder  # noqa: E402


def __getattr__(name: str):
    # The training helpers live beside the Keras training loop: importing them imports Keras.
    if name in ("_neighbour_targets", "_partial_whitening"):
        _import_tensorflow_quietly()
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BINARIZE_MODES", "PRETRAIN_MODES", "ConvAutoencoder", "KerasAutoencoder", "TextAutoencoder",
           "_neighbour_targets", "_partial_whitening"]
