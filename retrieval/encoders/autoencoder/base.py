"""What the autoencoders share: training phases, codes, inference, novelty and persistence.

A loaded autoencoder runs its saved encoder and decoder in NumPy
(:mod:`.numpy_graph`): answering a query or adding items imports neither
TensorFlow nor Keras. Keras comes in to train, to :meth:`KerasAutoencoder.derive`,
when ``encoder_``/``decoder_`` are asked for, and for a saved layer NumPy does
not run (with a warning that names it).
"""
from __future__ import annotations

import functools
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from ...config import CODE_MIN_SPREAD, PRETRAIN_MODES  # noqa: F401  (PRETRAIN_MODES re-exported)
from ...errors import IndexFormatError, InputError, RetrievalWarning
from ...progress import Progress
from ..base import Encoder
from . import _lazy_keras as keras
from ..vq import (QUANTIZE_MODES, VQ_SPACES, assign, check_decay, check_quantizer, decode, kmeans_codebook, split_groups,
                  to_whitened, whitened_space)
from . import numpy_forward, numpy_graph

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
    #: ``none`` or ``vq``: the code's groups quantised to a learned codebook (see :mod:`..vq`).
    quantize: str = "none"
    groups: int = 8
    codebook: int = 256
    commitment: float = 0.25
    unit_groups: bool = True
    vq_space: str = "groups"
    vq_freeze_encoder: bool = False
    vq_epochs: int = 0
    codebook_decay: float = 0.0
    #: VQ indexes built before these options existed quantised raw groups with a trained encoder.
    _legacy_params: ClassVar[dict[str, Any]] = {"vq_space": "groups", "vq_freeze_encoder": False}

    @property
    def binary(self) -> bool:
        """True when the codes are packed bits (``binarize`` is not ``none``)."""
        return self.binarize != "none"

    @property
    def quantized(self) -> bool:
        """True when the codes are quantised to a learned codebook (``quantize="vq"``)."""
        return self.quantize == "vq"

    @property
    def metric(self) -> str:
        """``hamming`` for binary codes, ``l2`` for VQ codes (the codebook's distance), else ``cosine``."""
        return "hamming" if self.binary else "l2" if self.quantized else "cosine"

    @property
    def _arrays(self) -> tuple[str, ...]:
        return (("code_mean", "code_projection") + (("thresholds",) if self.binary else ())
                + (("codebook",) if self.quantized else ())
                + (("vq_mean", "vq_projection", "vq_inverse") if self._whitened_vq else ()))

    @property
    def _whitened_vq(self) -> bool:
        return self.quantized and self.vq_space == "whitened"

    def _check_binarize(self) -> None:
        if self.binarize not in BINARIZE_MODES:
            raise InputError(f"binarize must be one of {', '.join(BINARIZE_MODES)}; got {self.binarize!r}")
        if self.binary:
            from ..hashing import check_bits

            check_bits(self.code_dim)
        if self.quantize not in QUANTIZE_MODES:
            raise InputError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}; got {self.quantize!r}")
        if self.quantized:
            if self.binary:
                raise InputError("--quantize vq and --bits exclude each other: VQ codes are G bytes, not bits")
            check_quantizer(self.groups, self.codebook, self.code_dim)
            if not (isinstance(self.commitment, (int, float)) and self.commitment >= 0):
                raise InputError(f"the commitment weight must be a number >= 0; got {self.commitment!r}")
            check_decay(self.codebook_decay)
            if self.vq_space not in VQ_SPACES:
                raise InputError(f"vq_space must be one of {', '.join(VQ_SPACES)}; got {self.vq_space!r}")

    # -- training ---------------------------------------------------------
    def _schedule(self):
        from .training import Schedule

        return Schedule(batch_size=self.batch_size, learning_rate=self.learning_rate, patience=self.patience,
                        validation_fraction=self.validation_fraction, seed=self.seed, lr_decay=self.lr_decay,
                        views=self.short_views)

    def _train(self, model, inputs, targets, loss, epochs: int, task: str,
               progress: Progress | None, sparse_input: bool = False, decay: bool | None = None) -> dict:
        """Fit ``model`` with early stopping on a held-out slice."""
        from .training import train

        return train(model, inputs, targets, loss, self._schedule(), epochs, task, progress,
                     sparse_input=sparse_input, decay=decay)

    def _binary_phase(self, inputs, targets, loss, progress: Progress | None, sparse_input: bool = False) -> dict:
        """Keep the float phase's encoder weights (for :meth:`derive`), then train on binarised codes."""
        from .training import binary_phase

        self.phase_one_ = self.encoder_.get_weights()
        return binary_phase(self.encoder_, self.decoder_, inputs, targets, loss, self._schedule(),
                            self.binary_epochs, progress, sparse_input=sparse_input)

    def _vq_phase(self, inputs, targets, loss, progress: Progress | None, sparse_input: bool = False) -> dict:
        """Keep the float phase's weights (for :meth:`derive`), then train through the quantiser.

        The codebook starts as k-means of each group of the float codes (a
        product quantiser of them, so training starts from PQ's codes), then
        learns by moving averages (``codebook_decay > 0``) or by its own
        loss (``0``), and is restarted where entries die. With
        ``vq_space="whitened"`` the map into the quantised space is learned
        here, from the float phase's codes, and stays fixed. With
        ``vq_freeze_encoder`` the encoder keeps its float-phase weights (and
        batch-norm statistics) through the VQ phase: the codebook and the
        decoder learn around the float codes.
        """
        from ...config import VQ_SAMPLE
        from .training import vq_phase

        self.phase_one_ = self.encoder_.get_weights()
        rng = np.random.default_rng(self.seed)
        n = inputs.shape[0]
        rows = np.sort(rng.choice(n, min(n, VQ_SAMPLE), replace=False))
        sample = inputs[rows]

        first = self._training_codes(sample)
        space = None
        if self._whitened_vq:
            space = whitened_space(first, groups=self.groups, whiten=self.whiten)
            self.vq_mean_, self.vq_projection_, self.vq_inverse_ = space

        def sample_codes():  # in the quantised space, before any unit_groups scaling (the quantiser's own)
            return self._vq_space(self._training_codes(sample))

        parts = split_groups(self._vq_space(first), self.groups, self.unit_groups)
        start = kmeans_codebook(parts, self.codebook, seed=self.seed, unit=self.unit_groups)
        if self.vq_freeze_encoder:  # a non-trainable model runs its batch normalisation in inference mode
            self.encoder_.trainable = False
        try:
            history, self.codebook_ = vq_phase(self.encoder_, self.decoder_, inputs, targets, loss, self._schedule(),
                                               self.vq_epochs, progress, codebook=start, beta=self.commitment,
                                               unit=self.unit_groups, sample_codes=sample_codes,
                                               decay=self.codebook_decay, sparse_input=sparse_input, space=space)
        finally:
            self.encoder_.trainable = True
        return history

    def _vq_space(self, raw: np.ndarray) -> np.ndarray:
        """Raw codes ``(n, D)`` in the space ``vq_space`` names (before ``unit_groups``)."""
        if self._whitened_vq:
            return to_whitened(raw, self.vq_mean_, self.vq_projection_, self.groups)
        return raw

    def _vq_parts(self, raw: np.ndarray) -> np.ndarray:
        """Raw codes ``(n, D)`` as the quantiser sees them: ``(n, G, D / G)`` groups."""
        return split_groups(self._vq_space(raw), self.groups, self.unit_groups)

    def _vq_back(self, vectors: np.ndarray) -> np.ndarray:
        """Quantised vectors ``(n, D)`` (codebook entries joined) as the decoder reads them."""
        if self._whitened_vq:
            return (vectors @ self.vq_inverse_ + self.vq_mean_).astype(np.float32)
        return vectors

    def _training_codes(self, inputs) -> np.ndarray:
        """Codes of training inputs (as the training graph takes them) under the encoder being trained."""
        return np.asarray(self.encoder_.predict(inputs, batch_size=1024, verbose=0), dtype=np.float32)

    def derive(self, binarize: str, X) -> "KerasAutoencoder":
        """An encoder from the float phase of a ``learned`` binary fit or a ``vq`` fit.

        Args:
            binarize: ``"none"`` (the float codes) or ``"median"`` (the float
                codes thresholded at each unit's training median).
            X: The inputs ``fit`` was given (to compute means and medians).

        Returns:
            A fitted encoder of the same class sharing no state with self.
        """
        if not hasattr(self, "phase_one_"):
            raise RuntimeError("derive() needs an encoder fitted with binarize='learned' or quantize='vq'")
        other = type(self)(**{**self.get_params(), "binarize": binarize, "quantize": "none"})
        other.encoder_ = keras.models.clone_model(self.encoder_)
        other.encoder_.set_weights(self.phase_one_)
        other.decoder_ = None  # the decoder went on to learn from bits; it no longer matches these codes
        other._finish(self._fit_input(X), self.fit_seconds_, self.history_)
        return other

    def _fit_input(self, X):
        return X

    def _finish(self, inputs, seconds: float, history: dict) -> None:
        from .training import _partial_whitening

        # Fitted here: the Keras models in memory are the truth now, not files loaded before.
        for stale in ("_encoder_graph", "_decoder_graph", "_files"):
            self.__dict__.pop(stale, None)
        self._compile_inference()
        codes = self._predict(inputs)
        mean = codes.mean(axis=0)
        # Centring maps an item at the mean code to the zero vector, whose
        # cosine with anything is 0 or rounding noise. When the codes do not
        # spread (every item the same text), every item sits at the mean: keep
        # them uncentred and unwhitened, so identical items score cosine 1.
        varied = _rms(codes - mean) > CODE_MIN_SPREAD * _rms(codes)
        self.code_mean_ = (mean if self.center and varied else np.zeros_like(mean)).astype(np.float32)
        self.code_projection_ = _partial_whitening(codes - self.code_mean_, self.whiten if varied else 0.0)
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
        graph = self.__dict__.get("_encoder_graph")
        if graph is not None:  # a loaded encoder: NumPy, sparse rows kept sparse
            if inputs.shape[0] <= batch:  # one part (a query): no slicing copy
                parts = [inputs]
            else:
                parts = [inputs[start:start + batch] for start in range(0, inputs.shape[0], batch)]
            return np.concatenate([graph(p if sp.issparse(p) else self._prepare_input(p)) for p in parts])
        if self.__dict__.get("_call") is None:  # loaded, with a layer NumPy does not run
            self._compile_inference()
        if self._stack is not None and (sp.issparse(inputs) or inputs.shape[0] <= 16):
            return numpy_forward.forward(self._stack, inputs if sp.issparse(inputs) else self._prepare_input(inputs))
        out = []
        for start in range(0, inputs.shape[0], batch):
            part = _rows(inputs, slice(start, start + batch))
            out.append(self._call(self._prepare_input(part)).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.code_dim), np.float32)

    def _prepare_input(self, part):
        return np.asarray(part, dtype=np.float32)

    def transform(self, X) -> np.ndarray:
        """Encode ``X``: float32 codes ``(n, code_dim)`` (mean code removed, partially
        whitened), or packed ``uint8`` bits ``(n, code_dim / 8)`` for binary codes."""
        if "encoder_" not in self.__dict__ and "_files" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        raw = self._predict(self._input_matrix(X))
        if self.binary:
            return np.packbits(raw > self.thresholds_, axis=1)
        if self.quantized:
            # Float, as the quantiser sees them: the PQ index stores each
            # item's nearest codebook entries and keeps a query as it is.
            return self._vq_parts(raw).reshape(len(raw), -1)
        return (raw - self.code_mean_) @ self.code_projection_

    def codes(self, X) -> np.ndarray:
        """The stored form of VQ codes: ``(n, groups)`` uint8 codebook indices."""
        if not self.quantized:
            raise RuntimeError("codes() is for quantize='vq' encoders")
        return assign(self._vq_parts(self._predict(self._input_matrix(X))), self.codebook_)

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
        if self.__dict__.get("_decoder_graph") is None and getattr(self, "decoder_", None) is None:
            raise IndexFormatError("this autoencoder was saved without its decoder (an older index); "
                                   "rebuild the index to get reconstruction errors")
        inputs = self._input_matrix(X)
        # Sparse rows stay sparse: the NumPy forward pass takes them as they are (a
        # TF-IDF row has a few dozen terms; densified, the first layer would cost
        # 10,000 x 500 products a row), and the loss reads only their terms.
        keep_sparse = sp.issparse(inputs)
        out = []
        for start in range(0, inputs.shape[0], batch):
            part = inputs[start:start + batch] if keep_sparse else _rows(inputs, slice(start, start + batch))
            out.append(self._item_loss(part, np.asarray(self._autoencode(part))))
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _autoencode(self, part) -> np.ndarray:
        """Encoder then decoder on a batch of inputs: the reconstructions novelty is measured on."""
        raw = self._predict(part)
        if self.binary:
            raw = np.where(raw > 0, 1.0, -1.0).astype(np.float32)
        if self.quantized:  # decoded from the codebook entries, as in training
            raw = self._quantized_back(raw)
        return self._decode(raw)

    # -- the decoder as a generator (retrieval/generate.py) -------------------------
    @property
    def has_decoder(self) -> bool:
        """True when the decoder was saved (indexes built before novelty scores have none)."""
        return self.__dict__.get("_decoder_graph") is not None or getattr(self, "decoder_", None) is not None

    def decoder_codes(self, X) -> np.ndarray:
        """The codes the decoder reads for ``X``: float32 ``(n, code_dim)``.

        These are the encoder's raw outputs, before the centring and whitening
        of :meth:`transform` (the decoder was trained on them); for binary
        codes the +-1 bits the decoder was trained on in the binary phase;
        for VQ codes the codebook entries it was trained on in the VQ phase
        (mapped back from the quantised space).
        """
        raw = self._predict(self._input_matrix(X))
        if self.binary:
            return np.where(raw > 0, 1.0, -1.0).astype(np.float32)
        if self.quantized:
            return self._quantized_back(raw)
        return raw.astype(np.float32)

    def _quantized_back(self, raw: np.ndarray) -> np.ndarray:
        """Raw codes quantised to their codebook entries, as the decoder reads them (the VQ phase's input)."""
        return self._vq_back(decode(assign(self._vq_parts(raw), self.codebook_), self.codebook_))

    def decode(self, codes) -> np.ndarray:
        """The decoder's output for codes of :meth:`decoder_codes`'s kind (any real vectors).

        Documents: a word distribution over the vocabulary ``(n, vocabulary)``;
        images: pixels in [0, 1] ``(n, size, size, channels)``.

        Raises:
            IndexFormatError: The autoencoder was saved without its decoder.
        """
        if not self.has_decoder:
            raise IndexFormatError("this autoencoder was saved without its decoder (an older index); "
                                   "rebuild the index to decode codes")
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != self.code_dim:
            raise InputError(f"codes must be (n, {self.code_dim}); got shape {codes.shape}")
        return np.asarray(self._decode(codes), dtype=np.float32)

    def _decode(self, codes: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        """The decoder on ``codes`` (and its further inputs ``extra``, if it takes any)."""
        graph = self.__dict__.get("_decoder_graph")
        if graph is not None:
            return graph(codes, *extra)
        if getattr(self, "_decode_call", None) is None:
            import tensorflow as tf

            # A partial, not a lambda: one retracing counter per decoder (see _compile_inference).
            self._decode_call = tf.function(functools.partial(self.decoder_, training=False), reduce_retracing=True)
        return self._decode_call([codes, *extra] if extra else codes).numpy()

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _save_extra(self, folder: Path) -> None:
        for part in ("encoder", "decoder"):
            target = folder / f"{part}.keras"
            if f"{part}_" in self.__dict__:  # fitted here, or loaded into Keras
                if self.__dict__[f"{part}_"] is not None:
                    self.__dict__[f"{part}_"].save(target)
                continue
            source = self.__dict__["_files"] / f"{part}.keras"  # loaded and never touched by Keras: the same bytes
            if source.exists() and source.resolve() != target.resolve():
                shutil.copyfile(source, target)

    def _load_extra(self, folder: Path) -> None:
        self._files = folder
        self._call = None
        self._encoder_graph = _read_graph(folder / "encoder.keras")
        if self._encoder_graph is None:
            self.encoder_ = _load_model(folder / "encoder.keras")
        # Indexes built before novelty scores have no decoder; queries still work.
        decoder = folder / "decoder.keras"
        self._decoder_graph = _read_graph(decoder) if decoder.exists() else None
        if decoder.exists() and self._decoder_graph is None:
            self.decoder_ = _load_model(decoder)

    def __getattr__(self, name: str):
        # A loaded autoencoder leaves its Keras models on disk until something asks for them.
        files = self.__dict__.get("_files")
        if name in ("encoder_", "decoder_") and files is not None:
            path = files / f"{name[:-1]}.keras"
            model = _load_model(path) if path.exists() else None
            setattr(self, name, model)
            return model
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _rms(codes: np.ndarray) -> float:
    """Root mean square norm of the rows."""
    return float(np.sqrt(np.mean(np.sum(np.square(codes, dtype=np.float64), axis=1))))


def _rows(array, idx):
    """Rows ``idx`` of a dense or sparse matrix, dense (Keras takes dense batches)."""
    part = array[idx]
    return part.toarray() if sp.issparse(part) else part


def _read_graph(path: Path) -> numpy_graph.Graph | None:
    """The saved model as a NumPy graph; None (after a warning naming the reason) when Keras must run it."""
    try:
        return numpy_graph.load(path)
    except numpy_graph.Unsupported as exc:
        warnings.warn(f"{path}: {exc} does not run in NumPy; loading it with Keras (slower start-up)",
                      RetrievalWarning, stacklevel=2)
        return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise IndexFormatError(f"cannot load {path} ({type(exc).__name__}: {exc}); rebuild the index") from None


def _load_model(path: Path):
    from . import models  # noqa: F401  (registers MaxUnpool2D, a layer of the unpool decoder)

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise IndexFormatError(f"cannot load {path} ({type(exc).__name__}: {exc}); rebuild the index") from None
