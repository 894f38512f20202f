"""What the autoencoders share: training phases, codes, inference, novelty and persistence."""
from __future__ import annotations

import functools
from pathlib import Path

import keras
import numpy as np
import scipy.sparse as sp

from ...config import PRETRAIN_MODES  # noqa: F401  (re-exported)
from ...errors import IndexFormatError, InputError
from ...progress import Progress
from ..base import Encoder
from . import numpy_forward
from .training import Schedule, _Batches, _partial_whitening, binary_phase, train

#: ``none``: float codes; ``learned``: binary codes trained as such (a float
#: phase, then straight-through stochastic binarisation); ``median``: the float
#: code thresholded at each unit's median after training (the baseline).
BINARIZE_MODES = ("none", "learned", "median")


class KerasAutoencoder(Encoder):
    """Shared training, persistence and fast inference of the autoencoders.

    With ``binarize="learned"`` the code has ``code_dim`` bits: training runs
    the float phase, then ``binary_epochs`` more with the decoder fed
    binarised codes; ``transform`` returns packed bits. :meth:`derive` turns
    the float phase's model into the ``none`` (float) and ``median``
    (thresholded) encoders compared against it.
    """

    binarize: str = "none"
    binary_epochs: int = 0
    #: Partial whitening exponent of the codes (0: centring only); see _finish.
    whiten: float = 0.0
    #: Cosine learning-rate decay over the planned epochs.
    lr_decay: bool = False
    #: Share of training rows replaced by short views of themselves (text only).
    short_views: float = 0.0

    @property
    def binary(self) -> bool:
        """True when the codes are packed bits (``binarize`` is not ``none``)."""
        return self.binarize != "none"

    @property
    def metric(self) -> str:
        """``hamming`` for binary codes, else ``cosine``."""
        return "hamming" if self.binary else "cosine"

    @property
    def _arrays(self) -> tuple[str, ...]:
        return ("code_mean", "code_projection") + (("thresholds",) if self.binary else ())

    def _check_binarize(self) -> None:
        if self.binarize not in BINARIZE_MODES:
            raise InputError(f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {self.binarize!r}")
        if self.binary:
            from ..hashing import check_bits

            check_bits(self.code_dim)

    # -- training ---------------------------------------------------------
    def _schedule(self) -> Schedule:
        return Schedule(batch_size=self.batch_size, learning_rate=self.learning_rate, patience=self.patience,
                        validation_fraction=self.validation_fraction, seed=self.seed, lr_decay=self.lr_decay,
                        views=self.short_views)

    def _train(self, model, inputs, targets, loss, epochs: int, task: str,
               progress: Progress | None, sparse_input: bool = False, decay: bool | None = None) -> dict:
        """Fit ``model`` with early stopping on a held-out slice."""
        return train(model, inputs, targets, loss, self._schedule(), epochs, task, progress,
                     sparse_input=sparse_input, decay=decay)

    def _binary_phase(self, inputs, targets, loss, progress: Progress | None, sparse_input: bool = False) -> dict:
        """Keep the float phase's encoder weights (for :meth:`derive`), then train on binarised codes."""
        self.phase_one_ = self.encoder_.get_weights()
        return binary_phase(self.encoder_, self.decoder_, inputs, targets, loss, self._schedule(),
                            self.binary_epochs, progress, sparse_input=sparse_input)

    def derive(self, binarize: str, X) -> "KerasAutoencoder":
        """An encoder from the float phase of a ``learned`` binary fit.

        Args:
            binarize: ``"none"`` (the float codes) or ``"median"`` (the float
                codes thresholded at each unit's training median).
            X: The inputs ``fit`` was given (to compute means and medians).

        Returns:
            A fitted encoder of the same class sharing no state with self.
        """
        if not hasattr(self, "phase_one_"):
            raise RuntimeError("derive() needs an encoder fitted with binarize='learned'")
        other = type(self)(**{**self.get_params(), "binarize": binarize})
        other.encoder_ = keras.models.clone_model(self.encoder_)
        other.encoder_.set_weights(self.phase_one_)
        other.decoder_ = None  # the decoder went on to learn from bits; it no longer matches these codes
        other._finish(self._fit_input(X), self.fit_seconds_, self.history_)
        return other

    def _fit_input(self, X):
        return X

    def _finish(self, inputs, seconds: float, history: dict) -> None:
        self._compile_inference()
        codes = self._predict(inputs)
        self.code_mean_ = codes.mean(axis=0).astype(np.float32) if self.center else \
            np.zeros(codes.shape[1], np.float32)
        self.code_projection_ = _partial_whitening(codes - self.code_mean_, self.whiten)
        if self.binary:
            # Learned bits are the signs the network was trained with; the
            # median baseline splits every unit's training values in half.
            self.thresholds_ = (np.median(codes, axis=0) if self.binarize == "median"
                                else np.zeros(codes.shape[1])).astype(np.float32)
        self.history_ = history
        self.fit_seconds_ = seconds

    # -- inference ----------------------------------------------------------
    def _compile_inference(self) -> None:
        # predict() builds a tf.data pipeline per call (~10 ms); a compiled
        # call is what keeps one query within a millisecond or two.
        import tensorflow as tf

        # A partial, not a lambda: TensorFlow counts retracings per code
        # object, so every encoder's lambda would share one counter and a few
        # encoders in one process would warn of "excessive retracing".
        self._call = tf.function(functools.partial(self.encoder_, training=False), reduce_retracing=True)
        self._stack = numpy_forward.dense_stack(self.encoder_)
        self._decode_call = None  # compiled on first use, for the decoder of this fit or load

    def _predict(self, inputs, batch: int = 2048) -> np.ndarray:
        if self._stack is not None and (sp.issparse(inputs) or inputs.shape[0] <= 16):
            return numpy_forward.forward(self._stack, inputs if sp.issparse(inputs) else self._prepare_input(inputs))
        out = []
        for start in range(0, inputs.shape[0], batch):
            part = _Batches._take(inputs, slice(start, start + batch))
            out.append(self._call(self._prepare_input(part)).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.code_dim), np.float32)

    def _prepare_input(self, part):
        return np.asarray(part, dtype=np.float32)

    def transform(self, X) -> np.ndarray:
        """Encode ``X``: float32 codes ``(n, code_dim)`` (mean code removed, partially
        whitened), or packed ``uint8`` bits ``(n, code_dim / 8)`` for binary codes."""
        if not hasattr(self, "encoder_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        raw = self._predict(self._input_matrix(X))
        if self.binary:
            return np.packbits(raw > self.thresholds_, axis=1)
        return (raw - self.code_mean_) @ self.code_projection_

    def _input_matrix(self, X):
        return X

    @property
    def dim(self) -> int:
        return self.code_dim

    # -- reconstruction (novelty) ------------------------------------------------
    def reconstruction_error(self, X, batch: int = 1024) -> np.ndarray:
        """Per-item reconstruction loss ``(n,)`` float32: how unlike the training data an item is.

        Documents: cross-entropy of the item's word distribution under the
        decoder's softmax; images: mean binary cross-entropy per pixel. Binary
        codes are decoded from their +-1 bits, as in training.
        """
        if getattr(self, "decoder_", None) is None:
            raise IndexFormatError("this autoencoder was saved without its decoder (an older index); "
                                   "rebuild the index to get reconstruction errors")
        inputs = self._input_matrix(X)
        out = []
        for start in range(0, inputs.shape[0], batch):
            part = _Batches._take(inputs, slice(start, start + batch))
            raw = self._predict(part)
            if self.binary:
                raw = np.where(raw > 0, 1.0, -1.0).astype(np.float32)
            decoded = np.asarray(self._decode(raw), dtype=np.float64)
            out.append(self._item_loss(part, decoded))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        if getattr(self, "_decode_call", None) is None:
            import tensorflow as tf

            # A partial, not a lambda: one retracing counter per decoder (see _compile_inference).
            self._decode_call = tf.function(functools.partial(self.decoder_, training=False), reduce_retracing=True)
        return self._decode_call(codes).numpy()

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _save_extra(self, folder: Path) -> None:
        self.encoder_.save(folder / "encoder.keras")
        if getattr(self, "decoder_", None) is not None:
            self.decoder_.save(folder / "decoder.keras")

    def _load_extra(self, folder: Path) -> None:
        self.encoder_ = _load_model(folder / "encoder.keras")
        # Indexes built before novelty scores have no decoder; queries still work.
        self.decoder_ = _load_model(folder / "decoder.keras") if (folder / "decoder.keras").exists() else None
        self._compile_inference()


def _load_model(path: Path):
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise IndexFormatError(f"cannot load {path} ({type(exc).__name__}: {exc}); rebuild the index") from None
