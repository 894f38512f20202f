"""Keras deep autoencoders: a dense one for documents, a convolutional one for images.

Encoder and decoder are separate named Keras models joined into the
autoencoder for training and saved as ``encoder.keras`` and ``decoder.keras``
(the decoder gives reconstruction errors: novelty); they load with Keras'
safe mode (no Lambda layers, no code).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

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

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from keras import layers  # noqa: E402

from ..errors import IndexFormatError, InputError  # noqa: E402
from ..progress import Progress, report  # noqa: E402
from ..vectorize import word_distribution  # noqa: E402
from .base import Encoder, l2_normalize  # noqa: E402

PRETRAIN_MODES = ("none", "layerwise")
#: ``none``: float codes; ``learned``: binary codes trained as such (a float
#: phase, then straight-through stochastic binarisation); ``median``: the float
#: code thresholded at each unit's median after training (the baseline).
BINARIZE_MODES = ("none", "learned", "median")


class _StochasticSign(layers.Layer):
    """Binarise codes to +-1 in the forward pass, straight-through backwards.

    In training each unit is +1 with probability ``(1 + tanh z) / 2``: the
    sampling noise only leaves the decoder a clean signal when units saturate,
    which is what pushes the code to be binary (as the noise injected in the
    semantic-hashing papers did). The gradient is that of ``tanh``. At
    inference the bit is ``z > 0``. This layer lives only in the training
    graph, never in the saved encoder.
    """

    def __init__(self, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z, training=None):
        t = keras.ops.tanh(z)
        if training:
            u = keras.random.uniform(keras.ops.shape(z), seed=self.seed_generator)
            b = keras.ops.where(u < (t + 1) / 2, 1.0, -1.0)
        else:
            b = keras.ops.where(z > 0, 1.0, -1.0)
        return t + keras.ops.stop_gradient(b - t)


class _Batches(keras.utils.PyDataset):
    """Mini-batches from dense or sparse arrays, densified one batch at a time.

    A 11k x 10k TF-IDF matrix is 450 MB dense; batches of it are a few MB.
    """

    def __init__(self, inputs, targets, batch_size: int, shuffle: bool, seed: int,
                 noise_target: bool = False) -> None:
        super().__init__()
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(inputs.shape[0])
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self) -> int:
        return -(-self.inputs.shape[0] // self.batch_size)

    @staticmethod
    def _take(array, idx):
        part = array[idx]
        if sp.issparse(part):
            return part.toarray()
        return part

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        return self._take(self.inputs, idx), self._take(self.targets, idx)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)


def _sparse_tensor(matrix: sp.csr_matrix):
    import tensorflow as tf

    coo = matrix.tocoo()
    indices = np.stack([coo.row, coo.col], axis=1).astype(np.int64)
    return tf.sparse.reorder(tf.SparseTensor(indices, coo.data.astype(np.float32), coo.shape))


def _sparse_dataset(inputs, targets, batch_size: int, shuffle: bool, seed: int):
    """A tf.data pipeline that keeps TF-IDF inputs sparse into the first layer.

    A document has ~100 of 10,000 terms: a sparse first layer does ~1 % of
    the dense multiply-adds. Targets are densified per batch.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((_sparse_tensor(sp.csr_matrix(inputs)),
                                               _sparse_tensor(sp.csr_matrix(targets))))
    if shuffle:
        data = data.shuffle(inputs.shape[0], seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).map(lambda x, t: (x, tf.sparse.to_dense(t))).prefetch(2)


class _EpochProgress(keras.callbacks.Callback):
    def __init__(self, progress: Progress | None, task: str, epochs: int) -> None:
        super().__init__()
        self.progress, self.task, self.epochs = progress, task, epochs

    def on_epoch_end(self, epoch, logs=None):
        report(self.progress, self.task, epoch + 1, self.epochs,
               **{k: float(v) for k, v in (logs or {}).items()})


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
            from .hashing import check_bits

            check_bits(self.code_dim)

    # -- training ---------------------------------------------------------
    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(n)
        n_val = int(round(n * self.validation_fraction))
        if n - n_val < 2:
            n_val = 0
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _train(self, model, inputs, targets, loss, epochs: int, task: str,
               progress: Progress | None, sparse_input: bool = False, decay: bool | None = None) -> dict:
        """Fit ``model`` with early stopping on a held-out slice."""
        train, val = self._split(inputs.shape[0])
        rate = self.learning_rate
        if self.lr_decay if decay is None else decay:
            # Cosine decay to 5 % over the planned epochs: the last epochs
            # settle into a minimum instead of bouncing around it.
            steps = epochs * -(-len(train) // self.batch_size)
            rate = keras.optimizers.schedules.CosineDecay(self.learning_rate, steps, alpha=0.05)
        model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss)
        callbacks = [_EpochProgress(progress, task, epochs)]
        data = _sparse_dataset if sparse_input else _Batches
        val_data = None
        if len(val):
            val_data = data(inputs[val], targets[val], 1024, False, self.seed)
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True))
        history = model.fit(data(inputs[train], targets[train], self.batch_size, True, self.seed),
                            validation_data=val_data, epochs=epochs, verbose=0, callbacks=callbacks,
                            shuffle=False)  # the data sources shuffle themselves, seeded
        return {k: [float(x) for x in v] for k, v in history.history.items()}

    def _binary_phase(self, inputs, targets, loss, progress: Progress | None, sparse_input: bool = False) -> dict:
        """Keep the float phase's encoder, then train on binarised codes.

        The decoder, trained on float codes, now receives +-1 bits; a fresh
        cosine-decayed schedule lets both adapt without undoing the float
        phase.
        """
        self.phase_one_ = self.encoder_.get_weights()
        spec = self.encoder_.inputs[0]
        inp = keras.Input(batch_shape=spec.shape, sparse=spec.sparse)
        bits = _StochasticSign(seed=self.seed, name="binarize")(self.encoder_(inp))
        model = keras.Model(inp, self.decoder_(bits), name="binary_autoencoder")
        return self._train(model, inputs, targets, loss, self.binary_epochs, "ae: binary epoch", progress,
                           sparse_input=sparse_input, decay=True)

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

        self._call = tf.function(lambda x: self.encoder_(x, training=False), reduce_retracing=True)
        self._stack = self._dense_stack()

    def _dense_stack(self) -> list | None:
        """The encoder as (weights, bias, relu?) steps when it is a plain MLP.

        Dropout is the identity at inference; a BatchNormalization after a
        linear Dense is folded into that layer's weights.
        """
        stack = []
        for layer in self.encoder_.layers:
            if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
                continue
            if isinstance(layer, keras.layers.BatchNormalization) and stack and not stack[-1][2]:
                gamma, beta, mean, var = (np.asarray(v, np.float64) for v in layer.get_weights())
                scale = gamma / np.sqrt(var + layer.epsilon)
                w, b, _ = stack[-1]
                stack[-1] = ((w * scale).astype(np.float32), ((b - mean) * scale + beta).astype(np.float32), False)
                continue
            if not isinstance(layer, keras.layers.Dense):
                return None
            act = keras.activations.serialize(layer.activation)
            act = act if isinstance(act, str) else act.get("config", {}).get("name", act.get("class_name"))
            if act not in ("relu", "linear"):
                return None
            w, b = layer.get_weights()
            stack.append((w, b, act == "relu"))
        return stack

    def _predict_few(self, part) -> np.ndarray:
        # A single query through TensorFlow costs ~2 ms of dispatch for
        # ~0.1 ms of arithmetic; the same MLP in NumPy/SciPy is exact to
        # float32 and keeps sparse TF-IDF rows sparse.
        h = part  # sparse rows stay sparse: the first product touches only their terms
        for w, b, relu in self._stack:
            h = np.asarray(h @ w) + b
            if relu:
                np.maximum(h, 0, out=h)
        return np.asarray(h, dtype=np.float32)

    def _predict(self, inputs, batch: int = 2048) -> np.ndarray:
        if self._stack is not None and (sp.issparse(inputs) or inputs.shape[0] <= 16):
            part = inputs if sp.issparse(inputs) else self._prepare_input(inputs)
            return self._predict_few(part.astype(np.float32))
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

            self._decode_call = tf.function(lambda c: self.decoder_(c, training=False), reduce_retracing=True)
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


def _partial_whitening(codes: np.ndarray, power: float) -> np.ndarray:
    """Projection onto the codes' principal axes, each scaled by variance**-power.

    ``power`` 0 leaves the codes unchanged, 0.5 is full whitening. Between
    the two, dominant directions (lighting, size) stop drowning the others
    in the cosine; measured on Fashion-MNIST codes, 0.25 gave +0.01
    precision@100 over centring alone, full whitening +0.003.
    """
    dim = codes.shape[1]
    if power == 0 or len(codes) <= dim:
        return np.eye(dim, dtype=np.float32)
    values, vectors = np.linalg.eigh(np.cov(codes.T.astype(np.float64)))
    values = np.maximum(values, values.max() * 1e-6)
    return (vectors * values ** -power).astype(np.float32)


def _neighbour_targets(X: sp.csr_matrix, targets: sp.csr_matrix, k: int, weight: float,
                       block: int = 1024) -> sp.csr_matrix:
    """Mix each row's target with the mean target of its k nearest neighbours.

    Neighbours by TF-IDF cosine within ``X`` (rows are L2-normalised), the
    document itself excluded: the semantic-hashing trick that pulls codes of
    related documents together without labels.
    """
    n = X.shape[0]
    k = min(k, n - 1)
    if k < 1 or weight <= 0:
        return targets
    XT = X.T.tocsr()
    cols = np.empty((n, k), np.int64)
    for start in range(0, n, block):
        sims = (X[start:start + block] @ XT).toarray()
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        cols[start:start + block] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    adjacency = sp.csr_matrix((np.full(n * k, 1.0 / k, np.float32), cols.ravel(),
                               np.arange(0, n * k + 1, k)), shape=(n, n))
    return ((1 - weight) * targets + weight * (adjacency @ targets)).astype(np.float32).tocsr()


class TextAutoencoder(KerasAutoencoder):
    """Deep autoencoder of TF-IDF vectors with a multinomial reconstruction loss.

    The decoder ends in a softmax over the vocabulary trained with
    cross-entropy against the document's word distribution (a multinomial
    likelihood, as suits word counts) instead of per-word sigmoids.

    Args:
        hidden: Hidden layer widths of the encoder (mirrored by the decoder).
        code_dim: Code dimension.
        epochs: Maximum training epochs (early stopping may end sooner).
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        noise: Input dropout rate (denoising); 0 disables it. Training with
            noise feeds dense inputs (dropout needs them), which is slower.
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
            directions around the corpus centre, not around the origin).
        binarize: ``"none"`` (float codes), ``"learned"`` (``code_dim`` bits
            trained as bits) or ``"median"`` (float codes thresholded).
        binary_epochs: Epochs of binarised training after the float phase.
        seed: Seed of weights, noise and shuffling.

    Attributes:
        encoder_: The Keras encoder model (TF-IDF -> code).
        code_mean_: Mean training code, subtracted by ``transform``.
        thresholds_: Per-unit bit thresholds (binary codes only).
    """

    name = "text_autoencoder"
    modality = "docs"

    def __init__(self, hidden: tuple[int, ...] | list[int] = (500, 250), code_dim: int = 32,
                 epochs: int = 20, batch_size: int = 256, learning_rate: float = 2e-3,
                 noise: float = 0.0, decoder_hidden: tuple[int, ...] | list[int] = (),
                 code_norm: bool = True, neighbours: int = 20, neighbour_weight: float = 0.8,
                 pretrain: str = "none", pretrain_epochs: int = 3, patience: int = 2,
                 validation_fraction: float = 0.05, center: bool = True, binarize: str = "none",
                 binary_epochs: int = 5, seed: int = 0) -> None:
        self.hidden = list(hidden)
        self.code_dim = code_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.noise = noise
        self.decoder_hidden = list(decoder_hidden)
        self.code_norm = code_norm
        self.neighbours = neighbours
        self.neighbour_weight = neighbour_weight
        self.pretrain = pretrain
        self.pretrain_epochs = pretrain_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.center = center
        self.binarize = binarize
        self.binary_epochs = binary_epochs
        self.seed = seed

    def _check(self, X) -> None:
        self._check_binarize()
        if self.code_dim < 1 or any(h < 1 for h in self.hidden):
            raise InputError(f"layer sizes must be positive; got hidden={self.hidden}, code_dim={self.code_dim}")
        if self.pretrain not in PRETRAIN_MODES:
            raise InputError(f"unknown pretrain mode {self.pretrain!r}; use one of {', '.join(PRETRAIN_MODES)}")
        if not 0 <= self.noise < 1:
            raise InputError(f"noise must be in [0, 1); got {self.noise}")
        if X.shape[0] < 4:
            raise InputError(f"an autoencoder needs at least 4 documents; got {X.shape[0]}")

    def _build(self, n_words: int, sparse: bool = False):
        inp = keras.Input((n_words,), name="tfidf", sparse=sparse)
        h = layers.Dropout(self.noise, name="masking_noise")(inp) if self.noise else inp
        for i, units in enumerate(self.hidden):
            h = layers.Dense(units, activation="relu", name=f"enc_{i}")(h)
        code = layers.Dense(self.code_dim, name="code")(h)
        if self.code_norm:
            code = layers.BatchNormalization(name="code_norm")(code)
        encoder = keras.Model(inp, code, name="encoder")
        dec_in = keras.Input((self.code_dim,), name="code_in")
        h = dec_in
        for i, units in reversed(list(enumerate(self.decoder_hidden))):
            h = layers.Dense(units, activation="relu", name=f"dec_{i}")(h)
        words = layers.Dense(n_words, activation="softmax", name="words")(h)
        decoder = keras.Model(dec_in, words, name="decoder")
        autoencoder = keras.Model(inp, decoder(encoder(inp)), name="autoencoder")
        return encoder, decoder, autoencoder

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
            history["pretrain"] = self._pretrain(X, targets, progress, sparse)
        loss = keras.losses.CategoricalCrossentropy()
        history.update(self._train(autoencoder, X, targets, loss, self.epochs, "ae: epoch", progress,
                                   sparse_input=sparse))
        if self.binarize == "learned":
            history["binary"] = self._binary_phase(X, targets, loss, progress, sparse_input=sparse)
        if sparse:  # the saved encoder takes dense rows, like every Keras model users know
            dense_encoder, _, _ = self._build(X.shape[1], sparse=False)
            dense_encoder.set_weights(self.encoder_.get_weights())
            self.encoder_ = dense_encoder
        self._finish(X, time.perf_counter() - started, history)
        return self

    def _fit_input(self, X):
        return sp.csr_matrix(X, dtype=np.float32)

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:
        # Cross-entropy of the item's own word distribution (not the
        # neighbour-mixed training target): the cost of this document's words.
        target = word_distribution(sp.csr_matrix(part, dtype=np.float32)).tocoo()
        logs = -np.log(np.maximum(decoded[target.row, target.col], 1e-12))
        loss = np.bincount(target.row, weights=target.data * logs, minlength=decoded.shape[0])
        # A row without a known word has no distribution to reconstruct: it
        # costs as much as a uniform guess over the vocabulary.
        loss[np.diff(sp.csr_matrix(part).indptr) == 0] = np.log(decoded.shape[1])
        return loss

    def _pretrain(self, X, targets, progress: Progress | None, sparse: bool) -> list:
        """Greedy layer-wise pre-training (Hinton & Salakhutdinov 2006).

        Layer 0 is a shallow multinomial autoencoder of the documents; each
        deeper layer (and the code) is a shallow linear-output autoencoder of
        the previous layer's activations. Their encoding weights seed the deep
        encoder, which is then fine-tuned end to end.
        """
        widths = self.hidden + [self.code_dim]
        inputs, losses = X, []
        for level, units in enumerate(widths):
            last = level == len(widths) - 1
            inp = keras.Input((inputs.shape[1],), sparse=sparse and level == 0)
            hidden = layers.Dense(units, activation=None if last else "relu")(inp)
            if level == 0:
                out = layers.Dense(inputs.shape[1], activation="softmax")(hidden)
                target, loss = targets, keras.losses.CategoricalCrossentropy()
            else:
                out = layers.Dense(inputs.shape[1])(hidden)
                target, loss = inputs, keras.losses.MeanSquaredError()
            hist = self._train(keras.Model(inp, out), inputs, target, loss, self.pretrain_epochs,
                               f"ae: pretrain layer {level + 1}/{len(widths)}", progress,
                               sparse_input=sparse and level == 0)
            losses.append(hist)
            weights = keras.Model(inp, hidden).layers[-1].get_weights()
            self.encoder_.get_layer("code" if last else f"enc_{level}").set_weights(weights)
            # The next level learns from this level's activations (NumPy: exact and fast).
            w, b = weights
            inputs = np.asarray(inputs @ w) + b
            if not last:
                np.maximum(inputs, 0, out=inputs)
        return losses


class ConvAutoencoder(KerasAutoencoder):
    """Convolutional autoencoder of images.

    The encoder stacks strided 3x3 convolutions (each followed by batch
    normalisation and ReLU, each halving the size) and a dense bottleneck.
    The decoder is either ``"deconv"``, transposed convolutions mirroring the
    encoder (the "deconvolution" autoencoder), or ``"dense"``, two dense
    layers back to the pixels (cheaper per epoch on small images). The output
    is a sigmoid trained with binary cross-entropy on pixels in [0, 1].

    Args:
        filters: Channels of the strided convolutions.
        code_dim: Code dimension.
        decoder: ``"deconv"`` or ``"dense"``.
        epochs: Maximum training epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam learning rate.
        noise: Input dropout rate (denoising); 0 disables it.
        patience: Early-stopping patience.
        validation_fraction: Held-out slice for early stopping.
        center: Subtract the mean training code.
        whiten: Partial whitening exponent of the codes (0 = none, 0.5 = full).
        augment: Denoising by geometric corruption: random shifts up to this
            fraction of the side, and mirroring, in training only (0 = off).
        lr_decay: Cosine learning-rate decay over the planned epochs.
        binarize: ``"none"`` (float codes), ``"learned"`` (``code_dim`` bits
            trained as bits) or ``"median"`` (float codes thresholded).
        binary_epochs: Epochs of binarised training after the float phase.
        seed: Seed of weights, noise and shuffling.

    Attributes:
        encoder_: The Keras encoder model (image -> code).
        code_mean_: Mean training code.
        code_projection_: Partial-whitening projection of centred codes.
    """

    name = "conv_autoencoder"
    modality = "images"

    def __init__(self, filters: tuple[int, ...] | list[int] = (32, 64, 128), code_dim: int = 32,
                 decoder: str = "dense", epochs: int = 30, batch_size: int = 256, learning_rate: float = 1e-3,
                 noise: float = 0.0, patience: int = 3, validation_fraction: float = 0.05,
                 center: bool = True, whiten: float = 0.25, augment: float = 0.07, lr_decay: bool = True,
                 binarize: str = "none", binary_epochs: int = 4, seed: int = 0) -> None:
        self.filters = list(filters)
        self.code_dim = code_dim
        self.decoder = decoder
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.noise = noise
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.center = center
        self.whiten = whiten
        self.augment = augment
        self.lr_decay = lr_decay
        self.binarize = binarize
        self.binary_epochs = binary_epochs
        self.seed = seed

    def _prepare_input(self, part):
        return np.asarray(part, dtype=np.float32) * np.float32(1 / 255)

    def reconstruct(self, X) -> np.ndarray:
        """The decoder's rendering of each image's code, uint8 like the input."""
        raw = self._predict(np.asarray(X))
        if self.binary:
            raw = np.where(raw > 0, 1.0, -1.0).astype(np.float32)
        decoded = np.asarray(self._decode(raw)).reshape(np.shape(X))
        return np.clip(np.rint(decoded * 255), 0, 255).astype(np.uint8)

    def _item_loss(self, part, decoded: np.ndarray) -> np.ndarray:
        x = np.asarray(part, dtype=np.float64).reshape(len(part), -1) / 255
        p = np.clip(decoded.reshape(len(part), -1), 1e-7, 1 - 1e-7)
        return -(x * np.log(p) + (1 - x) * np.log(1 - p)).mean(axis=1)

    def _build(self, shape: tuple[int, int, int]):
        size, _, channels = shape
        inp = keras.Input(shape, name="pixels")
        h = layers.Dropout(self.noise, name="masking_noise")(inp) if self.noise else inp
        if self.augment:
            # Geometric corruption (active in training only): the decoder must
            # restore the original from a shifted, mirrored view.
            h = layers.RandomTranslation(self.augment, self.augment, fill_mode="constant", seed=self.seed,
                                         name="jitter")(h)
            h = layers.RandomFlip("horizontal", seed=self.seed, name="mirror")(h)
        for i, f in enumerate(self.filters):
            h = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"conv_{i}")(h)
            h = layers.BatchNormalization(name=f"conv_{i}_bn")(h)
            h = layers.Activation("relu", name=f"conv_{i}_relu")(h)
        inner = tuple(h.shape[1:])
        code = layers.Dense(self.code_dim, name="code")(layers.Flatten()(h))
        if self.binary:  # standardised units: each bit splits the collection near its middle
            code = layers.BatchNormalization(name="code_norm")(code)
        encoder = keras.Model(inp, code, name="encoder")
        dec_in = keras.Input((self.code_dim,), name="code_in")
        if self.decoder == "dense":
            h = layers.Dense(512, activation="relu", name="dec_hidden")(dec_in)
            h = layers.Dense(size * size * channels, activation="sigmoid", name="dec_pixels")(h)
            h = layers.Reshape((size, size, channels), name="pixels_out")(h)
        else:
            h = layers.Dense(int(np.prod(inner)), activation="relu")(dec_in)
            h = layers.Reshape(inner)(h)
            for i, f in reversed(list(enumerate(self.filters))):
                h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu",
                                           name=f"deconv_{i}")(h)
            h = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="pixels_out")(h)
            if h.shape[1] != size:  # sizes not divisible by 2**len(filters)
                h = layers.Resizing(size, size, name="resize")(h)
        decoder = keras.Model(dec_in, h, name="decoder")
        return encoder, decoder, keras.Model(inp, decoder(encoder(inp)), name="autoencoder")

    def fit(self, X, progress: Progress | None = None, **kwargs) -> "ConvAutoencoder":
        """Train on uint8 images ``(n, size, size, channels)``; returns self."""
        X = np.asarray(X)
        if X.ndim != 4 or X.shape[1] != X.shape[2]:
            raise InputError(f"images must be (n, size, size, channels); got shape {X.shape}")
        if len(X) < 4:
            raise InputError(f"an autoencoder needs at least 4 images; got {len(X)}")
        if self.decoder not in ("dense", "deconv"):
            raise InputError(f"decoder must be 'dense' or 'deconv'; got {self.decoder!r}")
        self._check_binarize()
        started = time.perf_counter()
        keras.utils.set_random_seed(self.seed)
        self.encoder_, self.decoder_, autoencoder = self._build(X.shape[1:])
        scaled = X.astype(np.float32) * np.float32(1 / 255)
        loss = keras.losses.BinaryCrossentropy()
        history = self._train(autoencoder, scaled, scaled, loss, self.epochs, "ae: epoch", progress)
        if self.binarize == "learned":
            history["binary"] = self._binary_phase(scaled, scaled, loss, progress)
        self._finish(X, time.perf_counter() - started, history)
        return self
