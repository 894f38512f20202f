"""The dense autoencoder of TF-IDF vectors (documents)."""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from ...config import DocsConfig
from ...errors import InputError
from ...progress import Progress, report
from ...vectorize import word_distribution
from . import _lazy_keras as keras
from .base import PRETRAIN_MODES, KerasAutoencoder

#: The defaults of the options ``retrieval index docs`` shares with the encoder.
_D = DocsConfig()


class TextAutoencoder(KerasAutoencoder):
    """Deep autoencoder of TF-IDF vectors with a multinomial reconstruction loss.

    The decoder ends in a softmax over the vocabulary trained with
    cross-entropy against the document's word distribution (a multinomial
    likelihood, as suits word counts) instead of per-word sigmoids.

    All arguments are keyword-only; the defaults of those ``DocsConfig``
    shares are its defaults.

    Args:
        hidden: Hidden layer widths of the encoder (mirrored by the decoder).
        code_dim: Code dimension.
        epochs: Maximum training epochs (early stopping may end sooner).
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        noise: Input dropout rate (denoising); 0 disables it. Training with
            noise feeds dense inputs (dropout needs them), which is slower.
        short_views: Share of each batch's documents replaced by a short view
            of themselves: a log-uniform number of their words (down to one),
            renormalised, still reconstructing the whole document. Trains the
            encoder for short queries while the input stays sparse. Applies
            to sparse training only: with ``noise`` > 0 (dense inputs through
            a Dropout layer) the noise is the corruption and there are no
            short views.
        decoder_hidden: Hidden widths of the decoder between code and softmax;
            empty (the default, chosen by measurement) maps the code straight
            to the word distribution, a log-linear "topic" decoder that
            forces the code itself to carry the topics.
        code_norm: Batch normalisation of the code (measured: higher
            precision, especially in the first ranks).
        neighbours: k nearest TF-IDF neighbours mixed into the target; 0 disables.
        neighbour_weight: Weight of the neighbours' mean distribution in the target.
        pretrain: ``"none"`` or ``"layerwise"`` (greedy shallow autoencoders, then
            end-to-end fine-tuning).
        pretrain_epochs: Epochs per layer of layer-wise pre-training.
        patience: Early-stopping patience in epochs.
        validation_fraction: Held-out slice for early stopping.
        center: Subtract the mean training code (cosine then compares
            directions around the corpus centre, not around the origin);
            skipped when the training codes do not spread (identical items).
        binarize: ``"none"`` (float codes), ``"learned"`` (``code_dim`` bits
            trained as bits) or ``"median"`` (float codes thresholded).
        binary_epochs: Epochs of binarised training after the float phase.
        quantize: ``"none"`` or ``"vq"``: after the float phase, ``vq_epochs``
            of training through a vector quantiser (VQ-VAE) of ``groups``
            slices of the code, each to one of ``codebook`` learned entries;
            ``transform`` then gives the float vectors the product-quantisation
            index stores as ``groups`` bytes (see :mod:`retrieval.encoders.vq`).
        groups: Groups of the VQ code (bytes per item); divides ``code_dim``.
        codebook: Entries per group (2 to 256).
        commitment: Weight of the commitment loss.
        unit_groups: Quantise unit-length groups (distances are then cosines).
        vq_space: ``"whitened"``: quantise the codes as the float codes are
            compared (centred, the whole code unit length; the map learned
            from the float phase's codes); ``"groups"``: the raw codes,
            group by group.
        vq_freeze_encoder: Keep the encoder's float-phase weights through the
            VQ phase (the codebook and the decoder still learn).
        vq_epochs: Epochs of VQ training after the float phase.
        codebook_decay: 0: the codebook learns by its own loss; in (0, 1):
            the decay of the moving averages it follows instead (EMA updates).
        seed: Seed of weights, noise and shuffling.

    Attributes:
        encoder_: The Keras encoder model (TF-IDF -> code).
        code_mean_: Mean training code, subtracted by ``transform``.
        thresholds_: Per-unit bit thresholds (binary codes only).
    """

    name = "text_autoencoder"

    def __init__(self, *, hidden: tuple[int, ...] | list[int] = _D.hidden, code_dim: int = _D.code_dim,
                 epochs: int = _D.epochs, batch_size: int = _D.batch_size, learning_rate: float = _D.learning_rate,
                 noise: float = _D.noise, short_views: float = _D.short_views, decoder_hidden: tuple[int, ...] | list[int] = _D.decoder_hidden,
                 code_norm: bool = _D.code_norm, neighbours: int = _D.neighbours,
                 neighbour_weight: float = _D.neighbour_weight, pretrain: str = _D.pretrain,
                 pretrain_epochs: int = 3, patience: int = 2, validation_fraction: float = 0.05,
                 center: bool = True, binarize: str = "none", binary_epochs: int = _D.binary_epochs,
                 quantize: str = "none", groups: int = _D.groups, codebook: int = _D.codebook,
                 commitment: float = _D.commitment, unit_groups: bool = _D.unit_groups,
                 vq_space: str = _D.vq_space, vq_freeze_encoder: bool = _D.vq_freeze_encoder,
                 vq_epochs: int = _D.vq_epochs, codebook_decay: float = _D.codebook_decay,
                 seed: int = _D.seed) -> None:
        self._set_params(locals())

    def _check(self, X) -> None:
        self._check_binarize()
        if self.code_dim < 1 or any(h < 1 for h in self.hidden):
            raise InputError(f"layer sizes must be positive; got hidden={self.hidden}, code_dim={self.code_dim}")
        if self.pretrain not in PRETRAIN_MODES:
            raise InputError(f"unknown pretrain mode {self.pretrain!r}; use one of {', '.join(PRETRAIN_MODES)}")
        if not 0 <= self.noise < 1:
            raise InputError(f"noise must be in [0, 1); got {self.noise}")
        if not 0 <= self.short_views <= 1:
            raise InputError(f"short_views must be in [0, 1]; got {self.short_views}")
        if X.shape[0] < 4:
            raise InputError(f"an autoencoder needs at least 4 documents; got {X.shape[0]}")

    def _build(self, n_words: int, sparse: bool = False):
        from .models import build_text  # Keras: imported to train only

        return build_text(n_words, hidden=self.hidden, code_dim=self.code_dim, noise=self.noise,
                          decoder_hidden=self.decoder_hidden, code_norm=self.code_norm, sparse=sparse)

    def fit(self, X, targets=None, progress: Progress | None = None, **kwargs) -> "TextAutoencoder":
        """Train on L2-normalised TF-IDF rows.

        Args:
            X: TF-IDF matrix ``(n, vocabulary)``, sparse or dense.
            targets: Word distributions to reconstruct; by default the rows of
                ``X`` normalised to sum 1.
            progress: Per-epoch progress callback.

        Returns:
            self
        """
        from .training import _neighbour_targets, pretrain_layerwise  # Keras: imported to train only

        self._check(X)
        started = time.perf_counter()
        keras.utils.set_random_seed(self.seed)
        X = sp.csr_matrix(X, dtype=np.float32)
        targets = word_distribution(X if targets is None else sp.csr_matrix(targets, dtype=np.float32))
        report(progress, "ae: neighbours", 0, 1)
        targets = _neighbour_targets(X, targets, self.neighbours, self.neighbour_weight)
        report(progress, "ae: neighbours", 1, 1)
        sparse = self.noise == 0
        self.encoder_, self.decoder_, autoencoder = self._build(X.shape[1], sparse)
        history = {}
        if self.pretrain == "layerwise":
            history["pretrain"] = pretrain_layerwise(self.encoder_, X, targets, self.hidden + [self.code_dim],
                                                     self._schedule(), self.pretrain_epochs, progress, sparse)
        loss = keras.losses.CategoricalCrossentropy()
        history.update(self._train(autoencoder, X, targets, loss, self.epochs, "ae: epoch", progress,
                                   sparse_input=sparse))
        if self.binarize == "learned":
            history["binary"] = self._binary_phase(X, targets, loss, progress, sparse_input=sparse)
        if self.quantized:
            history["vq"] = self._vq_phase(X, targets, loss, progress, sparse_input=sparse)
        if sparse:  # the saved encoder takes dense rows, like every Keras model users know
            dense_encoder, _, _ = self._build(X.shape[1], sparse=False)
            dense_encoder.set_weights(self.encoder_.get_weights())
            self.encoder_ = dense_encoder
        self._finish(X, time.perf_counter() - started, history)
        return self

    def _fit_input(self, X):
        return sp.csr_matrix(X, dtype=np.float32)

    def _training_codes(self, inputs) -> np.ndarray:
        # The training encoder may take sparse rows; its weights run in NumPy on them as they are.
        from . import numpy_forward

        return numpy_forward.forward(numpy_forward.dense_stack(self.encoder_), inputs)

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:
        # Cross-entropy of the item's own word distribution (not the
        # neighbour-mixed training target): the cost of this document's words.
        # Straight on the CSR arrays: building scipy matrices per call cost
        # more than the decoder itself on a one-query batch.
        X = part if sp.isspmatrix_csr(part) and part.dtype == np.float32 else sp.csr_matrix(part, dtype=np.float32)
        terms = np.diff(X.indptr)
        rows = np.repeat(np.arange(X.shape[0]), terms)
        sums = np.bincount(rows, weights=X.data, minlength=X.shape[0])
        sums[sums == 0] = 1.0
        target = X.data * (1.0 / sums).astype(np.float32)[rows]
        # Only the row's own terms are read (float64 from here, as the sums need).
        logs = -np.log(np.maximum(decoded[rows, X.indices].astype(np.float64), 1e-12))
        loss = np.bincount(rows, weights=target * logs, minlength=decoded.shape[0])
        # A row without a known word has no distribution to reconstruct: it
        # costs as much as a uniform guess over the vocabulary.
        loss[terms == 0] = np.log(decoded.shape[1])
        return loss
