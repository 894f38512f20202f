"""Batch-norm recalibration after training: the moving statistics become the inputs' population statistics."""
import numpy as np


def test_recalibrated_batchnorm_normalises_its_inputs():
    from retrieval.encoders.autoencoder.training import keras, recalibrate_batchnorm

    rng = np.random.default_rng(0)
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="d")
    hidden = dense(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="bn")(keras.layers.ReLU()(hidden)))
    dense.set_weights([rng.normal(size=(4, 3)).astype(np.float32), np.array([1.0, -2.0, 3.0], np.float32)])
    X = (rng.normal(size=(700, 4)) * 3 + 1).astype(np.float32)
    before = np.asarray(model(X, training=False))
    assert np.abs(before.mean(axis=0)).max() > 0.5  # the initial statistics (0, 1) do not normalise
    assert recalibrate_batchnorm(model, X, sample=500, batch=64, seed=1) == 1
    out = np.asarray(model(X, training=False))
    assert np.abs(out.mean(axis=0)).max() < 0.15 and np.abs(out.std(axis=0) - 1).max() < 0.15
    bn = model.get_layer("bn")
    relu = np.maximum(X @ dense.get_weights()[0] + dense.get_weights()[1], 0)
    rows = np.sort(np.random.default_rng(1).choice(700, 500, replace=False))
    assert np.allclose(np.asarray(bn.moving_mean), relu[rows].mean(axis=0), atol=1e-4)
    assert np.allclose(np.asarray(bn.moving_variance), relu[rows].var(axis=0), rtol=1e-3, atol=1e-4)


def test_an_image_encoder_fits_without_a_warning():
    """The recalibration probes the encoder with its own input structure: Keras warned on a bare array."""
    import warnings

    from retrieval.encoders.autoencoder import ConvAutoencoder

    X = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = ConvAutoencoder(code_dim=4, filters=(4, 8), epochs=1, batch_size=16).fit(X).transform(X)
    assert codes.shape == (64, 4) and np.isfinite(codes).all()
