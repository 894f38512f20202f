"""The convolutional autoencoder of images."""
from __future__ import annotations

import time

import numpy as np

from ...config import DECODERS, ImagesConfig
from ...errors import InputError
from ...progress import Progress
from . import _lazy_keras as keras
from .base import KerasAutoencoder

#: The defaults of the options ``retrieval index images`` shares with the encoder.
_I = ImagesConfig()


class ConvAutoencoder(KerasAutoencoder):
    """Convolutional autoencoder of images.

    The encoder stacks strided 3x3 convolutions (each followed by batch
    normalisation and ReLU, each halving the size) and a dense bottleneck.
    The decoder is either ``"deconv"``, transposed convolutions mirroring the
    encoder (the "deconvolution" autoencoder), or ``"dense"``, two dense
    layers back to the pixels (cheaper per epoch on small images), or
    ``"unpool"``: the encoder then halves sizes by 3x3 convolutions of stride
    1 and 2x2 max-pooling, and the decoder mirrors it by max-unpooling (each
    value back at the position of its window's maximum in the encoder) and
    3x3 convolutions. The output is a sigmoid trained with binary
    cross-entropy on pixels in [0, 1].

    The ``unpool`` decoder takes the code *and* the encoder's activations
    before each pooling (the positions of the maxima): reconstructions
    (:meth:`reconstruct`, reconstruction errors) run the whole
    encoder -> decoder path on the image, in NumPy for a loaded model. A code
    alone has no positions: decoding it (``_decode(codes)``) feeds zero
    activations, whose windows tie everywhere, so each value fills its whole
    window (nearest-neighbour upsampling). ``unpool`` does not combine with
    binary codes.

    All arguments are keyword-only; the defaults of those ``ImagesConfig``
    shares are its defaults.

    Args:
        filters: Channels of the strided convolutions.
        code_dim: Code dimension.
        decoder: ``"deconv"``, ``"dense"`` or ``"unpool"``.
        epochs: Maximum training epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        noise: Input dropout rate (denoising); 0 disables it.
        patience: Early-stopping patience in epochs.
        validation_fraction: Held-out slice for early stopping.
        center: Subtract the mean training code (not when the training codes
            do not spread: identical images).
        whiten: Partial whitening exponent of the codes (0 = none, 0.5 = full).
        augment: Denoising by geometric corruption: random shifts up to this
            fraction of the side, and mirroring, in training only (0 = off).
        mirror: Mirror images at random in the geometric corruption (off
            for glyphs, whose mirror image is another glyph or none).
        lr_decay: Cosine learning-rate decay over the planned epochs.
        binarize: ``"none"`` (float codes), ``"learned"`` (``code_dim`` bits
            trained as bits) or ``"median"`` (float codes thresholded).
        binary_epochs: Epochs of binarised training after the float phase.
        quantize, groups, codebook, commitment, unit_groups, vq_space, vq_freeze_encoder, vq_epochs,
        codebook_decay: VQ
            codes, as for :class:`~.text.TextAutoencoder`.
        seed: Seed of weights, noise and shuffling.

    Attributes:
        encoder_: The Keras encoder model (image -> code).
        code_mean_: Mean training code.
        code_projection_: Partial-whitening projection of centred codes.
    """

    name = "conv_autoencoder"

    def __init__(self, *, filters: tuple[int, ...] | list[int] = _I.filters, code_dim: int = _I.code_dim,
                 decoder: str = _I.decoder, epochs: int = _I.epochs, batch_size: int = _I.batch_size,
                 learning_rate: float = _I.learning_rate, noise: float = _I.noise, patience: int = _I.patience,
                 validation_fraction: float = 0.05, center: bool = True, whiten: float = _I.whiten,
                 augment: float = _I.augment, mirror: bool = _I.mirror, lr_decay: bool = True, binarize: str = "none",
                 binary_epochs: int = _I.binary_epochs, quantize: str = "none", groups: int = _I.groups,
                 codebook: int = _I.codebook, commitment: float = _I.commitment, unit_groups: bool = _I.unit_groups,
                 vq_space: str = _I.vq_space, vq_freeze_encoder: bool = _I.vq_freeze_encoder,
                 vq_epochs: int = _I.vq_epochs, codebook_decay: float = _I.codebook_decay,
                 seed: int = _I.seed) -> None:
        self._set_params(locals())

    def _prepare_input(self, part):
        return np.asarray(part, dtype=np.float32) * np.float32(1 / 255)

    def reconstruct(self, X) -> np.ndarray:
        """The decoder's rendering of each image's code, uint8 like the input."""
        decoded = np.asarray(self._autoencode(np.asarray(X))).reshape(np.shape(X))
        return np.clip(np.rint(decoded * 255), 0, 255).astype(np.uint8)

    def _autoencode(self, part) -> np.ndarray:
        if self.decoder != "unpool":
            return super()._autoencode(part)
        # The decoder unpools at the positions of this image's maxima: the
        # encoder's activations before each pooling go along with the code.
        x = self._prepare_input(part)
        graph = self.__dict__.get("_encoder_graph")
        if graph is not None:
            raw, *references = graph.run(x, outputs=[graph.output, *graph.pool_inputs])
        else:
            raw, *references = self._encode_with_references(x)
        return self._decode(raw, *references)

    def _encode_with_references(self, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
        """Keras: the code and the activations before each pooling of ``x``."""
        if self.__dict__.get("_tap_model") is None:
            pools = [layer for layer in self.encoder_.layers if type(layer).__name__ == "MaxPooling2D"]
            self._tap_model = keras.Model(self.encoder_.inputs, [self.encoder_.outputs[0]] + [p.input for p in pools])
        parts = [[t.numpy() for t in self._tap_model(x[start:start + batch], training=False)]
                 for start in range(0, len(x), batch)]
        return [np.concatenate(p) for p in zip(*parts)]

    def _decode(self, codes: np.ndarray, *references: np.ndarray) -> np.ndarray:
        if self.decoder == "unpool" and not references:
            # A code alone: zero activations tie in every window, so unpooling
            # fills each window with its value (nearest-neighbour upsampling).
            references = tuple(np.zeros((len(codes), *shape), np.float32) for shape in self._reference_shapes())
        return super()._decode(codes, *references)

    def _reference_shapes(self) -> list[tuple]:
        graph = self.__dict__.get("_decoder_graph")
        if graph is not None:
            return graph.input_shapes[1:]
        return [tuple(t.shape[1:]) for t in self.decoder_.inputs[1:]]

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:
        x = np.asarray(part, dtype=np.float64).reshape(len(part), -1) / 255
        p = np.clip(np.asarray(decoded, dtype=np.float64).reshape(len(part), -1), 1e-7, 1 - 1e-7)
        return -(x * np.log(p) + (1 - x) * np.log(1 - p)).mean(axis=1)

    def _build(self, shape: tuple[int, int, int]):
        from .models import build_conv  # Keras: imported to train only

        return build_conv(shape, filters=self.filters, code_dim=self.code_dim, decoder=self.decoder,
                          noise=self.noise, augment=self.augment, code_norm=self.binary or self.quantized, seed=self.seed, mirror=self.mirror)

    def fit(self, X, progress: Progress | None = None, **kwargs) -> "ConvAutoencoder":
        """Train on uint8 images ``(n, size, size, channels)``; returns self."""
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[1] != X.shape[2]:
            raise InputError(f"images must be (n, size, size, channels); got shape {X.shape}")
        if len(X) < 4:
            raise InputError(f"an autoencoder needs at least 4 images; got {len(X)}")
        if self.decoder not in DECODERS:
            raise InputError(f"decoder must be one of {', '.join(DECODERS)}; got {self.decoder!r}")
        self._check_binarize()
        if self.decoder == "unpool" and self.binary:
            raise InputError(f"decoder 'unpool' does not combine with binary codes (binarize={self.binarize!r}); "
                             "use decoder 'deconv' or 'dense' for bits")
        self.__dict__.pop("_tap_model", None)
        started = time.perf_counter()
        keras.utils.set_random_seed(self.seed)
        self.encoder_, self.decoder_, autoencoder = self._build(X.shape[1:])
        scaled = X.astype(np.float32) * np.float32(1 / 255)
        loss = keras.losses.BinaryCrossentropy()
        history = self._train(autoencoder, scaled, scaled, loss, self.epochs, "ae: epoch", progress)
        if self.binarize == "learned":
            history["binary"] = self._binary_phase(scaled, scaled, loss, progress)
        if self.quantized:
            history["vq"] = self._vq_phase(scaled, scaled, loss, progress)
        from .training import recalibrate_batchnorm

        recalibrate_batchnorm(self.encoder_, scaled, seed=self.seed)  # a small collection's moving statistics are stale
        self._finish(X, time.perf_counter() - started, history)
        return self
