"""The ``unpool`` decoder: max-unpooling at the encoder's max-pooling positions (NumPy and Keras agree)."""
import numpy as np
import pytest

from retrieval.config import ImagesConfig
from retrieval.encoders.autoencoder import ConvAutoencoder, numpy_graph
from retrieval.errors import InputError


def _unpool_numpy(x, reference):
    return numpy_graph._build_max_unpool("u", {}, [])(x, reference)


def test_values_go_to_the_window_maxima_ties_fill_and_odd_sizes_crop():
    # One image, one channel, 3x3: windows {rows 0-1} x {cols 0-1}, {0-1} x {2}, {2} x {0-1}, {2} x {2}.
    reference = np.array([[1, 5, 2],
                          [3, 0, 7],
                          [4, 4, 6]], np.float32)[None, :, :, None]
    x = np.array([[10, 20],
                  [30, 40]], np.float32)[None, :, :, None]
    expected = np.array([[0, 10, 0],
                         [0, 0, 20],
                         [30, 30, 40]], np.float32)  # the tie 4 == 4 passes 30 to both
    out = _unpool_numpy(x, reference)
    assert out.shape == (1, 3, 3, 1)
    assert np.array_equal(out[0, :, :, 0], expected)
    # The pooling the switches come from: 2x2, SAME (the odd row/column pooled alone).
    assert np.array_equal(numpy_graph._max_pool(reference)[0, :, :, 0], [[5, 7], [4, 6]])


def test_keras_layer_equals_numpy_and_a_zero_reference_upsamples():
    from retrieval.encoders.autoencoder.models import MaxUnpool2D

    rng = np.random.default_rng(0)
    reference = np.maximum(rng.normal(size=(3, 7, 6, 2)), 0).astype(np.float32)  # ReLU zeros: real ties
    x = rng.normal(size=(3, 4, 3, 2)).astype(np.float32)
    keras_out = np.asarray(MaxUnpool2D()([x, reference]))
    assert np.array_equal(keras_out, _unpool_numpy(x, reference))
    assert np.count_nonzero(keras_out) < keras_out.size  # positions matter: not every pixel gets a value
    up = _unpool_numpy(x, np.zeros_like(reference))
    assert np.array_equal(up, np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)[:, :7, :6])


def test_unpool_rejects_binary_codes():
    with pytest.raises(InputError, match="--decoder unpool does not combine with --bits 32"):
        ImagesConfig(decoder="unpool", bits=32)
    X = np.zeros((8, 8, 8, 1), np.uint8)
    with pytest.raises(InputError, match="decoder 'unpool' does not combine with binary codes"):
        ConvAutoencoder(filters=[2], code_dim=8, decoder="unpool", binarize="learned", epochs=1).fit(X)
