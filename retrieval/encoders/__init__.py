"""Encoders: the autoencoders and the baselines, behind one contract."""
from __future__ import annotations

from pathlib import Path

from ..errors import IndexFormatError
from .base import Encoder, l2_normalize
from .baselines import LSAEncoder, PCAEncoder, PixelEncoder, TfidfEncoder
from .hashing import ITQEncoder, LSHEncoder


def _autoencoders():
    # Importing Keras costs seconds; only the methods that need it pay.
    from .autoencoder import ConvAutoencoder, TextAutoencoder

    return {TextAutoencoder.name: TextAutoencoder, ConvAutoencoder.name: ConvAutoencoder}


def encoder_class(name: str) -> type[Encoder]:
    """Return the encoder class registered under ``name`` (manifest key)."""
    light = {cls.name: cls for cls in (LSAEncoder, TfidfEncoder, PCAEncoder, PixelEncoder,
                                       LSHEncoder, ITQEncoder)}
    if name in light:
        return light[name]
    heavy = _autoencoders()
    if name in heavy:
        return heavy[name]
    raise IndexFormatError(f"unknown encoder {name!r} in the manifest; this retrieval version cannot read it")


def load_encoder(name: str, folder: Path) -> Encoder:
    """Load a saved encoder by its registry name."""
    return encoder_class(name).load(folder)


__all__ = ["Encoder", "ITQEncoder", "LSAEncoder", "LSHEncoder", "PCAEncoder", "PixelEncoder", "TfidfEncoder",
           "encoder_class", "load_encoder", "l2_normalize"]
