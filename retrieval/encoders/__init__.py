"""Encoders: the autoencoders and the baselines, behind one contract.

Modules load on first use: scikit-learn (the baselines) and Keras (the
autoencoders) cost seconds to import, and a command such as ``--version`` or
``list`` needs neither.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..errors import IndexFormatError
from .base import Encoder, l2_normalize

#: Encoder registry name (the manifest's ``encoder``) -> (module, class).
REGISTRY = {
    "lsa": ("baselines", "LSAEncoder"), "tfidf": ("baselines", "TfidfEncoder"),
    "pca": ("baselines", "PCAEncoder"), "pixels": ("baselines", "PixelEncoder"),
    "lsh": ("hashing", "LSHEncoder"), "itq": ("hashing", "ITQEncoder"),
    "text_autoencoder": ("autoencoder", "TextAutoencoder"), "conv_autoencoder": ("autoencoder", "ConvAutoencoder"),
}
_CLASSES = {cls: module for module, cls in REGISTRY.values()}


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(import_module(f".{_CLASSES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encoder_class(name: str) -> type[Encoder]:
    """Return the encoder class registered under ``name`` (manifest key)."""
    if name not in REGISTRY:
        raise IndexFormatError(f"unknown encoder {name!r} in the manifest; this retrieval version cannot read it")
    module, cls = REGISTRY[name]
    found = getattr(import_module(f".{module}", __name__), cls)
    if found.name != name:  # the table and the classes must agree
        raise IndexFormatError(f"encoder registry maps {name!r} to {cls}, whose name is {found.name!r}")
    return found


def load_encoder(name: str, folder: Path) -> Encoder:
    """Load a saved encoder by its registry name."""
    return encoder_class(name).load(folder)


__all__ = ["Encoder", "ITQEncoder", "LSAEncoder", "LSHEncoder", "PCAEncoder", "PixelEncoder", "TfidfEncoder",
           "encoder_class", "load_encoder", "l2_normalize"]
