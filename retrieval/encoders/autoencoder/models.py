"""The Keras models: encoder, decoder and the autoencoder joining them.

Only standard Keras layers end up in the saved ``encoder.keras`` and
``decoder.keras`` (they load in safe mode), except :class:`MaxUnpool2D` of the
``unpool`` decoder, a registered serialisable layer (no code in the archive);
:class:`_StochasticSign` lives in the binary training graph only,
:class:`VectorQuantizer` in the VQ training graph only (its codebook is saved
as an array and applied in NumPy).
"""
from __future__ import annotations

from . import _import_tensorflow_quietly

_import_tensorflow_quietly()  # this module is imported to train only; TensorFlow's notes stay off the terminal

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers


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


class VectorQuantizer(layers.Layer):
    """Quantise each of ``groups`` slices of the code to the nearest of ``size`` codebook vectors (VQ-VAE).

    The forward pass outputs the codebook vectors; the backward pass copies
    the decoder's gradient onto the encoder's output unchanged (straight
    through). The commitment loss ``beta ||z - sg(e)||^2`` keeps the
    encodings near their entries (van den Oord et al., 2017). The codebook
    learns one of two ways:

    * ``decay == 0``: by its own loss ``||sg(z) - e||^2``, which pulls the
      chosen entries towards the encodings (a gradient step of Adam);
    * ``0 < decay < 1``: by exponential moving averages of each entry's
      count and of the sum of the encodings it takes (the VQ-VAE paper's
      appendix, Razavi et al. 2019): every training batch moves an entry
      towards the mean of its encodings, whatever the learning rate, and
      Laplace smoothing of the counts keeps a rarely chosen entry from
      being divided by zero.

    With ``unit`` every group and entry is scaled to unit length first, so
    the squared distance is ``2 - 2 cos``. Dead entries are restarted from
    outside (:class:`~.training.CodebookRestarts`, through :meth:`load`).
    """

    def __init__(self, groups: int, size: int, beta: float = 0.25, unit: bool = False, decay: float = 0.0,
                 epsilon: float = 1e-5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.groups, self.size, self.beta, self.unit = groups, size, beta, unit
        self.decay, self.epsilon = float(decay), epsilon

    @property
    def ema(self) -> bool:
        """True when the codebook follows moving averages instead of its own loss."""
        return self.decay > 0

    def build(self, input_shape) -> None:
        self.width = int(input_shape[-1]) // self.groups
        shape = (self.groups, self.size, self.width)
        self.codebook = self.add_weight(shape=shape, initializer="random_normal", trainable=not self.ema,
                                        name="codebook")
        if self.ema:
            self.ema_count = self.add_weight(shape=shape[:2], initializer="ones", trainable=False, name="ema_count")
            self.ema_sum = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="ema_sum")

    def load(self, codebook: np.ndarray) -> None:
        """Set the codebook ``(G, K, d)`` (the k-means start, restarted entries).

        With moving averages, an entry that changed restarts with its
        group's mean count (so the next batches move it no faster than the
        others), and every entry's sum is its vector times its count.
        """
        codebook = np.asarray(codebook, dtype=np.float32)
        if self.ema:
            old = np.asarray(keras.ops.convert_to_numpy(self.codebook))
            count = np.asarray(keras.ops.convert_to_numpy(self.ema_count), dtype=np.float32)
            changed = np.any(old != codebook, axis=2)
            count = np.where(changed, count.mean(axis=1, keepdims=True), count).astype(np.float32)
            self.ema_count.assign(count)
            self.ema_sum.assign(codebook * count[..., None])
        self.codebook.assign(codebook)

    def entries(self):
        """The codebook as the distances see it (unit length with ``unit``)."""
        e = self.codebook
        if self.unit:
            e = e / keras.ops.maximum(keras.ops.norm(e, axis=-1, keepdims=True), 1e-12)
        return e

    def call(self, z, training=None):
        ops = keras.ops
        zg = ops.reshape(z, (-1, self.groups, self.width))
        if self.unit:
            zg = zg / ops.maximum(ops.norm(zg, axis=-1, keepdims=True), 1e-12)
        e = self.entries()
        # ||z - e||^2 less ||z||^2, which is the same for every entry.
        dist = ops.sum(ops.square(e), axis=-1)[None] - 2 * ops.einsum("ngd,gkd->ngk", zg, e)
        chosen = ops.one_hot(ops.argmin(dist, axis=-1), self.size)
        q = ops.einsum("ngk,gkd->ngd", chosen, e)
        commit = self.beta * ops.mean(ops.square(zg - ops.stop_gradient(q)))
        if self.ema:
            if training:
                self._ema_update(ops.stop_gradient(zg), chosen)
            self.add_loss(commit)
        else:
            self.add_loss(ops.mean(ops.square(ops.stop_gradient(zg) - q)) + commit)
        return ops.reshape(zg + ops.stop_gradient(q - zg), (-1, self.groups * self.width))

    def _ema_update(self, zg, chosen) -> None:
        ops, d = keras.ops, self.decay
        count = d * self.ema_count + (1 - d) * ops.sum(chosen, axis=0)  # (G, K)
        total = d * self.ema_sum + (1 - d) * ops.einsum("ngk,ngd->gkd", chosen, zg)
        # Laplace smoothing: an unchosen entry's count tends to 0, not to a division by it.
        n = ops.sum(count, axis=1, keepdims=True)
        smoothed = (count + self.epsilon) / (n + self.size * self.epsilon) * n
        self.ema_count.assign(count)
        self.ema_sum.assign(total)
        self.codebook.assign(total / smoothed[..., None])


@keras.saving.register_keras_serializable(package="retrieval")
class MaxUnpool2D(layers.Layer):
    """Max-unpooling (2x2): each value goes back to the position of its pooling window's maximum.

    Called on ``[x, reference]``: ``reference`` is the encoder's activation
    before its ``MaxPooling2D(2, padding="same")`` and ``x`` has that pooling's
    output shape. Each value of ``x`` is copied to the 2x2 window it came
    from, kept where ``reference`` equals the window's maximum and zero
    elsewhere (the "switches" of SegNet / Zeiler and Fergus), then cropped to
    ``reference``'s size. A window whose values tie (a dead ReLU window:
    all zeros) passes the value to every tied position: a reference of zeros,
    as a decoder fed a code alone gets, makes this nearest-neighbour
    upsampling. The switches carry no gradient.
    """

    def call(self, inputs):
        x, reference = inputs
        rows, cols = reference.shape[1], reference.shape[2]
        pooled = keras.ops.max_pool(reference, pool_size=2, strides=2, padding="same")
        switches = keras.ops.cast(keras.ops.equal(reference, _upsample(pooled, rows, cols)), x.dtype)
        return _upsample(x, rows, cols) * keras.ops.stop_gradient(switches)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], *input_shape[1][1:3], input_shape[0][3])


def _upsample(x, rows: int, cols: int):
    # Each value repeated over its 2x2 window, cropped to the pre-pooling size.
    return keras.ops.repeat(keras.ops.repeat(x, 2, axis=1), 2, axis=2)[:, :rows, :cols]


def build_text(n_words: int, *, hidden: list[int], code_dim: int, noise: float, decoder_hidden: list[int],
               code_norm: bool, sparse: bool = False):
    """The dense autoencoder of TF-IDF rows: ``(encoder, decoder, autoencoder)``.

    The encoder stacks ReLU layers ``enc_<i>`` and a linear ``code`` (batch
    normalised as ``code_norm`` when asked); the decoder ends in a softmax
    over the vocabulary (``words``).
    """
    inp = keras.Input((n_words,), name="tfidf", sparse=sparse)
    h = layers.Dropout(noise, name="masking_noise")(inp) if noise else inp
    for i, units in enumerate(hidden):
        h = layers.Dense(units, activation="relu", name=f"enc_{i}")(h)
    code = layers.Dense(code_dim, name="code")(h)
    if code_norm:
        code = layers.BatchNormalization(name="code_norm")(code)
    encoder = keras.Model(inp, code, name="encoder")
    dec_in = keras.Input((code_dim,), name="code_in")
    h = dec_in
    for i, units in reversed(list(enumerate(decoder_hidden))):
        h = layers.Dense(units, activation="relu", name=f"dec_{i}")(h)
    words = layers.Dense(n_words, activation="softmax", name="words")(h)
    decoder = keras.Model(dec_in, words, name="decoder")
    autoencoder = keras.Model(inp, decoder(encoder(inp)), name="autoencoder")
    return encoder, decoder, autoencoder


def build_conv(shape: tuple[int, int, int], *, filters: list[int], code_dim: int, decoder: str, noise: float,
               augment: float, code_norm: bool, seed: int, mirror: bool = True):
    """The convolutional autoencoder of square images: ``(encoder, decoder, autoencoder)``.

    ``decoder`` is ``"dense"`` (two dense layers back to the pixels),
    ``"deconv"`` (transposed convolutions mirroring the encoder) or
    ``"unpool"``: the encoder then halves sizes with 3x3 convolutions of
    stride 1 each followed by ``MaxPooling2D`` (instead of strided
    convolutions), and the decoder mirrors it with :class:`MaxUnpool2D` +
    3x3 convolutions. That decoder takes ``[code, *references]``, the
    encoder's activations before each pooling (outermost first): in the
    autoencoder they flow from the encoder as skip connections.
    """
    if decoder == "unpool":
        return _build_unpool(shape, filters=filters, code_dim=code_dim, noise=noise, augment=augment,
                             code_norm=code_norm, seed=seed, mirror=mirror)
    size, _, channels = shape
    inp = keras.Input(shape, name="pixels")
    h = _corrupt(inp, noise=noise, augment=augment, seed=seed, mirror=mirror)
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = layers.BatchNormalization(name=f"conv_{i}_bn")(h)
        h = layers.Activation("relu", name=f"conv_{i}_relu")(h)
    inner = tuple(h.shape[1:])
    code = layers.Dense(code_dim, name="code")(layers.Flatten()(h))
    if code_norm:  # standardised units: each bit splits the collection near its middle
        code = layers.BatchNormalization(name="code_norm")(code)
    encoder = keras.Model(inp, code, name="encoder")
    dec_in = keras.Input((code_dim,), name="code_in")
    if decoder == "dense":
        h = layers.Dense(512, activation="relu", name="dec_hidden")(dec_in)
        h = layers.Dense(size * size * channels, activation="sigmoid", name="dec_pixels")(h)
        h = layers.Reshape((size, size, channels), name="pixels_out")(h)
    else:
        h = layers.Dense(int(np.prod(inner)), activation="relu")(dec_in)
        h = layers.Reshape(inner)(h)
        for i, f in reversed(list(enumerate(filters))):
            h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=f"deconv_{i}")(h)
        h = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="pixels_out")(h)
        if h.shape[1] != size:  # sizes not divisible by 2**len(filters)
            h = layers.Resizing(size, size, name="resize")(h)
    decoder_model = keras.Model(dec_in, h, name="decoder")
    return encoder, decoder_model, keras.Model(inp, decoder_model(encoder(inp)), name="autoencoder")


def _corrupt(inp, *, noise: float, augment: float, seed: int, mirror: bool):
    h = layers.Dropout(noise, name="masking_noise")(inp) if noise else inp
    if augment:
        # Geometric corruption (active in training only): the decoder must
        # restore the original from a shifted, mirrored view.
        h = layers.RandomTranslation(augment, augment, fill_mode="constant", seed=seed, name="jitter")(h)
        if mirror:  # not for glyphs: a mirrored 2 is no digit
            h = layers.RandomFlip("horizontal", seed=seed, name="mirror")(h)
    return h


def _build_unpool(shape, *, filters, code_dim, noise, augment, code_norm, seed, mirror):
    """The ``unpool`` variant of :func:`build_conv`: max-pooling encoder, max-unpooling decoder."""
    size, _, channels = shape
    inp = keras.Input(shape, name="pixels")
    h = _corrupt(inp, noise=noise, augment=augment, seed=seed, mirror=mirror)
    references = []
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv_{i}")(h)
        h = layers.BatchNormalization(name=f"conv_{i}_bn")(h)
        h = layers.Activation("relu", name=f"conv_{i}_relu")(h)
        references.append(h)
        h = layers.MaxPooling2D(2, padding="same", name=f"pool_{i}")(h)
    inner = tuple(h.shape[1:])
    code = layers.Dense(code_dim, name="code")(layers.Flatten()(h))
    if code_norm:
        code = layers.BatchNormalization(name="code_norm")(code)
    encoder = keras.Model(inp, code, name="encoder")
    dec_in = keras.Input((code_dim,), name="code_in")
    ref_in = [keras.Input(tuple(r.shape[1:]), name=f"reference_{i}") for i, r in enumerate(references)]
    h = layers.Dense(int(np.prod(inner)), activation="relu", name="dec_dense")(dec_in)
    h = layers.Reshape(inner, name="dec_reshape")(h)
    for i in reversed(range(len(filters))):
        h = MaxUnpool2D(name=f"unpool_{i}")([h, ref_in[i]])
        if i:  # back to the channels of the level above, whose switches come next
            h = layers.Conv2D(filters[i - 1], 3, padding="same", activation="relu", name=f"dec_conv_{i}")(h)
    h = layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="pixels_out")(h)
    decoder_model = keras.Model([dec_in, *ref_in], h, name="decoder")
    autoencoder = keras.Model(inp, decoder_model([code, *references]), name="autoencoder")
    return encoder, decoder_model, autoencoder


def build_binary(encoder, decoder, seed: int):
    """The training graph of binary codes: encoder, stochastic +-1 bits, decoder."""
    spec = encoder.inputs[0]
    inp = keras.Input(batch_shape=spec.shape, sparse=spec.sparse)
    bits = _StochasticSign(seed=seed, name="binarize")(encoder(inp))
    return keras.Model(inp, decoder(bits), name="binary_autoencoder")


class _FixedAffine(layers.Layer):
    """``x -> (x - before) @ matrix`` (scaled to length ``length`` when given) ``+ after``; nothing trained.

    The maps into and out of the whitened VQ space (see
    :func:`retrieval.encoders.vq.whitened_space`); they live in the VQ
    training graph only, so they need no serialisation.
    """

    def __init__(self, matrix, *, before=None, after=None, length: float | None = None, **kwargs) -> None:
        super().__init__(trainable=False, **kwargs)
        self.matrix = keras.ops.convert_to_tensor(np.asarray(matrix, np.float32))
        self.before = None if before is None else keras.ops.convert_to_tensor(np.asarray(before, np.float32))
        self.after = None if after is None else keras.ops.convert_to_tensor(np.asarray(after, np.float32))
        self.length = length

    def call(self, x):
        ops = keras.ops
        if self.before is not None:
            x = x - self.before
        x = ops.matmul(x, self.matrix)
        if self.length is not None:
            x = x * (self.length / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12))
        return x if self.after is None else x + self.after


def build_vq(encoder, decoder, *, groups: int, size: int, beta: float, unit: bool, decay: float = 0.0,
             space: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """The VQ-VAE training graph: encoder, :class:`VectorQuantizer`, decoder; returns ``(model, quantizer)``.

    ``space``: ``(mean, projection, inverse)`` of the whitened space (see
    :func:`retrieval.encoders.vq.whitened_space`): the quantiser then works
    on the codes mapped into it, and the decoder reads its output mapped back.
    """
    spec = encoder.inputs[0]
    inp = keras.Input(batch_shape=spec.shape, sparse=spec.sparse)
    quantizer = VectorQuantizer(groups, size, beta, unit, decay, name="quantize")
    z = encoder(inp)
    if space is None:
        return keras.Model(inp, decoder(quantizer(z)), name="vq_autoencoder"), quantizer
    mean, projection, inverse = space
    u = _FixedAffine(projection, before=mean, length=float(np.sqrt(groups)), name="to_vq_space")(z)
    back = _FixedAffine(inverse, after=mean, name="from_vq_space")(quantizer(u))
    return keras.Model(inp, decoder(back), name="vq_autoencoder"), quantizer


def build_shallow(n_inputs: int, units: int, *, level: int, last: bool, sparse: bool):
    """One level of layer-wise pre-training: ``(shallow autoencoder, its encoding Dense layer)``.

    Level 0 reconstructs the word distribution (softmax); deeper levels
    reconstruct the previous level's activations (linear). The code level
    (``last``) encodes linearly, the others with ReLU.
    """
    inp = keras.Input((n_inputs,), sparse=sparse)
    encoding = layers.Dense(units, activation=None if last else "relu")
    hidden = encoding(inp)
    out = layers.Dense(n_inputs, activation="softmax" if level == 0 else None)(hidden)
    return keras.Model(inp, out), encoding
