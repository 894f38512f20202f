"""Training: data pipelines, the fit loop, the binary phase, layer-wise pre-training, targets."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

from . import _import_tensorflow_quietly

_import_tensorflow_quietly()  # this module is imported to train only; TensorFlow's notes stay off the terminal

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp

from ...progress import Progress, report
from .models import build_binary, build_shallow, build_vq


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


def short_views(x, fraction: float, seed: int):
    """Replace a ``fraction`` of the rows of a sparse batch by short views of themselves.

    A short view keeps ``m`` of the row's ``n`` words, ``m`` drawn
    log-uniformly from 1 to ``n`` (as many views of 1-3 words as of 10-30),
    and is L2-normalised again, like the TF-IDF row of a short query. The
    target stays the whole document's: the encoder learns to place a few
    words where their document lies (denoising by heavy word dropout),
    and the input stays sparse, unlike a Dropout layer.

    Args:
        x: ``tf.SparseTensor`` batch of L2-normalised TF-IDF rows.
        fraction: Share of rows replaced by a short view (0 leaves ``x`` as is).
        seed: Op seed of the random draws.

    Returns:
        A ``tf.SparseTensor`` of the same shape.
    """
    import tensorflow as tf

    rows = x.indices[:, 0]
    n_rows = tf.cast(x.dense_shape[0], tf.int32)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(x.values), rows, n_rows)
    viewed = tf.random.uniform([n_rows], seed=seed) < fraction
    # Keep each word with probability m / n, m log-uniform in [1, n].
    keep_rate = tf.exp(-tf.random.uniform([n_rows], seed=seed + 1) * tf.math.log(tf.maximum(counts, 1.0)))
    keep_rate = tf.where(viewed, keep_rate, 1.0)
    u = tf.random.uniform(tf.shape(x.values), seed=seed + 2)
    # A row's word with the smallest draw always stays: no view is empty.
    first = tf.gather(tf.math.unsorted_segment_min(u, rows, n_rows), rows)
    kept = tf.sparse.retain(x, (u < tf.gather(keep_rate, rows)) | (u <= first))
    kept_rows = kept.indices[:, 0]
    norms = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(kept.values), kept_rows, n_rows))
    values = kept.values / tf.maximum(tf.gather(norms, kept_rows), 1e-12)
    return tf.SparseTensor(kept.indices, values, kept.dense_shape)


def _sparse_dataset(inputs, targets, batch_size: int, shuffle: bool, seed: int, views: float = 0.0):
    """A tf.data pipeline that keeps TF-IDF inputs sparse into the first layer.

    A document has ~100 of 10,000 terms: a sparse first layer does ~1 % of
    the dense multiply-adds. Targets are densified per batch. ``views``:
    share of each training batch's rows replaced by :func:`short_views`.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((_sparse_tensor(sp.csr_matrix(inputs)),
                                               _sparse_tensor(sp.csr_matrix(targets))))
    if shuffle:
        data = data.shuffle(inputs.shape[0], seed=seed, reshuffle_each_iteration=True)
    if views > 0:
        return data.batch(batch_size).map(
            lambda x, t: (short_views(x, views, seed), tf.sparse.to_dense(t))).prefetch(2)
    return data.batch(batch_size).map(lambda x, t: (x, tf.sparse.to_dense(t))).prefetch(2)


class _EpochProgress(keras.callbacks.Callback):
    def __init__(self, progress: Progress | None, task: str, epochs: int) -> None:
        super().__init__()
        self.progress, self.task, self.epochs = progress, task, epochs

    def on_epoch_end(self, epoch, logs=None):
        report(self.progress, self.task, epoch + 1, self.epochs,
               **{k: float(v) for k, v in (logs or {}).items()})


@dataclass(frozen=True)
class Schedule:
    """The optimisation settings every training phase of one encoder shares."""

    batch_size: int
    learning_rate: float
    patience: int
    validation_fraction: float
    seed: int
    lr_decay: bool = False
    #: Share of training rows replaced by short views (sparse text inputs only).
    views: float = 0.0


class _KerasStepRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning about Keras' own step functions.

    Every ``fit`` of a new model makes Keras build new ``tf.function``s
    (``TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator``
    and its test-step twin), each traced once. TensorFlow counts retracings
    per Python code object, not per function, so a few small fits in one
    process (``retrieval demo``, ``ae-float``/``ae-median`` beside ``ae``)
    add up to a false "excessive retracing" warning in the middle of the
    output. Nothing else is filtered, and only while :func:`train` runs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message and "TensorFlowTrainer." in message)


@contextlib.contextmanager
def _quiet_step_retracing():
    import tensorflow as tf

    logger, quiet = tf.get_logger(), _KerasStepRetracing()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def split(n: int, seed: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, validation)`` row indices; no validation rows when fewer than 2 would train."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(n * validation_fraction))
    if n - n_val < 2:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train(model, inputs, targets, loss, schedule: Schedule, epochs: int, task: str, progress: Progress | None,
          sparse_input: bool = False, decay: bool | None = None, callbacks: list | None = None) -> dict:
    """Fit ``model`` with early stopping on a held-out slice; returns the history (floats).

    With sparse inputs, ``schedule.views`` of the training rows are replaced
    by short views each batch (see :func:`short_views`); validation rows stay whole.
    """
    train_rows, val = split(inputs.shape[0], schedule.seed, schedule.validation_fraction)
    rate = schedule.learning_rate
    if schedule.lr_decay if decay is None else decay:
        # Cosine decay to 5 % over the planned epochs: the last epochs
        # settle into a minimum instead of bouncing around it.
        steps = epochs * -(-len(train_rows) // schedule.batch_size)
        rate = keras.optimizers.schedules.CosineDecay(schedule.learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss)
    callbacks = [_EpochProgress(progress, task, epochs)] + list(callbacks or [])
    data = _sparse_dataset if sparse_input else _Batches
    val_data = None
    if len(val):
        val_data = data(inputs[val], targets[val], 1024, False, schedule.seed)
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=schedule.patience, restore_best_weights=True))
    with _quiet_step_retracing():
        train_data = (_sparse_dataset(inputs[train_rows], targets[train_rows], schedule.batch_size, True,
                                      schedule.seed, schedule.views) if sparse_input
                      else _Batches(inputs[train_rows], targets[train_rows], schedule.batch_size, True, schedule.seed))
        history = model.fit(train_data,
                            validation_data=val_data, epochs=epochs, verbose=0, callbacks=callbacks,
                            shuffle=False)  # the data sources shuffle themselves, seeded
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def binary_phase(encoder, decoder, inputs, targets, loss, schedule: Schedule, epochs: int,
                 progress: Progress | None, sparse_input: bool = False) -> dict:
    """Train ``encoder`` and ``decoder`` further on binarised codes.

    The decoder, trained on float codes, now receives +-1 bits; a fresh
    cosine-decayed schedule lets both adapt without undoing the float phase.
    """
    model = build_binary(encoder, decoder, schedule.seed)
    return train(model, inputs, targets, loss, schedule, epochs, "ae: binary epoch", progress,
                 sparse_input=sparse_input, decay=True)


class CodebookRestarts(keras.callbacks.Callback):
    """After every epoch, move the codebook entries no sampled training row uses onto sampled encodings.

    Args:
        quantizer: The :class:`~.models.VectorQuantizer` of the training graph.
        sample_codes: ``() -> (n, D)`` float32 codes of a fixed sample of
            training rows under the current encoder.
        seed: Seed of the draws.
    """

    def __init__(self, quantizer, sample_codes, seed: int) -> None:
        super().__init__()
        self.quantizer, self.sample_codes = quantizer, sample_codes
        self.rng = np.random.default_rng(seed)
        self.restarted: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        from ..vq import restart_dead, split_groups

        q = self.quantizer
        parts = split_groups(self.sample_codes(), q.groups, q.unit)
        codebook, n = restart_dead(np.asarray(keras.ops.convert_to_numpy(q.entries())), parts, self.rng)
        q.load(codebook)
        self.restarted.append(n)


def vq_phase(encoder, decoder, inputs, targets, loss, schedule: Schedule, epochs: int, progress: Progress | None,
             *, codebook: np.ndarray, beta: float, unit: bool, sample_codes, decay: float = 0.0,
             sparse_input: bool = False, space: tuple | None = None
             ) -> tuple[dict, np.ndarray]:
    """Train ``encoder`` and ``decoder`` further through a :class:`~.models.VectorQuantizer`.

    Args:
        codebook: ``(G, K, d)`` start of the codebook (k-means of the float codes).
        beta: Weight of the commitment loss.
        unit: Quantise unit-length groups.
        sample_codes: See :class:`CodebookRestarts` (codes in the space the quantiser works on).
        space: ``(mean, projection, inverse)`` of the whitened space, or ``None``
            (see :func:`~.models.build_vq`).
        decay: 0: the codebook learns by its own loss; else the decay of its
            moving averages (see :class:`~.models.VectorQuantizer`).

    Returns:
        ``(history, the learned codebook as the distances see it)``; the
        history's ``restarted`` counts dead entries restarted per epoch.
    """
    groups, size, _ = codebook.shape
    model, quantizer = build_vq(encoder, decoder, groups=groups, size=size, beta=beta, unit=unit, decay=decay,
                                space=space)
    quantizer.load(codebook)
    restarts = CodebookRestarts(quantizer, sample_codes, schedule.seed)
    history = train(model, inputs, targets, loss, schedule, epochs, "ae: vq epoch", progress,
                    sparse_input=sparse_input, decay=True, callbacks=[restarts])
    history["restarted"] = restarts.restarted
    return history, np.asarray(keras.ops.convert_to_numpy(quantizer.entries()), dtype=np.float32)


def pretrain_layerwise(encoder, X, targets, widths: list[int], schedule: Schedule, epochs: int,
                       progress: Progress | None, sparse: bool) -> list:
    """Greedy layer-wise pre-training (Hinton & Salakhutdinov 2006) of a text encoder.

    Layer 0 is a shallow multinomial autoencoder of the documents; each
    deeper layer (and the code) is a shallow linear-output autoencoder of
    the previous layer's activations. Their encoding weights seed the deep
    encoder's ``enc_<i>`` and ``code`` layers, which is then fine-tuned end
    to end by the caller. ``widths`` are the hidden widths and the code's.
    """
    inputs, losses = X, []
    for level, units in enumerate(widths):
        last = level == len(widths) - 1
        model, encoding = build_shallow(inputs.shape[1], units, level=level, last=last, sparse=sparse and level == 0)
        if level == 0:
            target, loss = targets, keras.losses.CategoricalCrossentropy()
        else:
            target, loss = inputs, keras.losses.MeanSquaredError()
        hist = train(model, inputs, target, loss, schedule, epochs,
                     f"ae: pretrain layer {level + 1}/{len(widths)}", progress, sparse_input=sparse and level == 0)
        losses.append(hist)
        weights = encoding.get_weights()
        encoder.get_layer("code" if last else f"enc_{level}").set_weights(weights)
        # The next level learns from this level's activations (NumPy: exact and fast).
        w, b = weights
        inputs = np.asarray(inputs @ w) + b
        if not last:
            np.maximum(inputs, 0, out=inputs)
    return losses


def recalibrate_batchnorm(model, inputs, *, sample: int = 10_000, batch: int = 512, seed: int = 0) -> int:
    """Set each BatchNormalization layer's moving statistics to the population statistics of its inputs.

    Keras keeps an exponential moving average (momentum 0.99) of the batch
    statistics, which starts at mean 0 and variance 1 and needs a few hundred
    updates to forget them. A small collection trains for fewer steps than
    that (3,000 images, batch 256, 5 epochs: about 50), so inference used
    stale variances and the codes were poor (measured: BENCHMARKS.md,
    "Batch-norm statistics of small image collections"). After training, the
    layers are visited in order, and each one's mean and variance are those of
    its inputs over a seeded sample of ``inputs``, earlier layers already
    recalibrated (inference mode throughout).

    Returns:
        The number of layers recalibrated.
    """
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    rows = np.arange(len(inputs))
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), sample, replace=False))
    for norm in norms:
        # The model's own input structure (one named input): a bare array would make Keras warn.
        probe = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs, norm.input)
        total = squares = None
        count = 0
        for start in range(0, len(rows), batch):
            h = np.asarray(probe(inputs[rows[start:start + batch]], training=False), dtype=np.float64)
            h = h.reshape(-1, h.shape[-1])
            total = h.sum(axis=0) + (0 if total is None else total)
            squares = (h * h).sum(axis=0) + (0 if squares is None else squares)
            count += len(h)
        mean = total / count
        norm.moving_mean.assign(mean.astype(np.float32))
        norm.moving_variance.assign(np.maximum(squares / count - mean * mean, 0.0).astype(np.float32))
    return len(norms)


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
    related documents together without labels. Exact: every row is compared
    with every row, in blocks on a thread pool (SciPy's sparse product and
    NumPy's argpartition release the GIL, so threads use every core).
    """
    n = X.shape[0]
    k = min(k, n - 1)
    if k < 1 or weight <= 0:
        return targets
    # A block's dense similarity matrix is rows x n float64: cap it near 128 MB so a
    # 50,000-document sample on several threads stays far below the build's memory budget.
    block = max(64, min(block, 16_000_000 // max(n, 1)))
    XT = X.T.tocsr()
    cols = np.empty((n, k), np.int64)

    def fill(start: int) -> None:
        sims = (X[start:start + block] @ XT).toarray()
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf
        cols[start:start + block] = np.argpartition(-sims, k - 1, axis=1)[:, :k]

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(fill, range(0, n, block)))  # list(): re-raise a worker's exception here
    adjacency = sp.csr_matrix((np.full(n * k, 1.0 / k, np.float32), cols.ravel(),
                               np.arange(0, n * k + 1, k)), shape=(n, n))
    return ((1 - weight) * targets + weight * (adjacency @ targets)).astype(np.float32).tocsr()
