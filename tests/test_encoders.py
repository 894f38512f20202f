"""The encoder contract, checked on every encoder."""
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from retrieval.config import DocsConfig, ImagesConfig
from retrieval.encoders import LSAEncoder, PCAEncoder, PixelEncoder, TfidfEncoder, encoder_class, load_encoder
from retrieval.encoders.autoencoder import ConvAutoencoder, TextAutoencoder, _neighbour_targets, numpy_forward
from retrieval.errors import IndexFormatError, InputError
from retrieval.vectorize import TextVectorizer
from conftest import synthetic_docs

DOCS = synthetic_docs(15)
TFIDF = TextVectorizer().fit_transform([t for _, t in DOCS])
IMAGES = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 1), dtype=np.uint8)

FACTORIES = {
    "text_autoencoder": (lambda: TextAutoencoder(hidden=(16,), code_dim=4, epochs=2, batch_size=16, neighbours=3,
                                                 noise=0.1), TFIDF),
    "text_autoencoder_layerwise": (lambda: TextAutoencoder(hidden=(16, 8), code_dim=4, epochs=1, batch_size=16,
                                                           neighbours=0, pretrain="layerwise", pretrain_epochs=1),
                                   TFIDF),
    "lsa": (lambda: LSAEncoder(5), TFIDF),
    "tfidf": (TfidfEncoder, TFIDF),
    "conv_autoencoder": (lambda: ConvAutoencoder(filters=(4, 8), code_dim=4, epochs=1, batch_size=16), IMAGES),
    "pca": (lambda: PCAEncoder(5), IMAGES),
    "pixels": (PixelEncoder, IMAGES),
}


@pytest.fixture(scope="module", params=list(FACTORIES))
def fitted(request):
    make, X = FACTORIES[request.param]
    encoder = make()
    returned = encoder.fit(X)
    return encoder, returned, X


def _dense(codes):
    return codes.toarray() if sp.issparse(codes) else codes


def test_fit_returns_self_and_learned_state(fitted):
    encoder, returned, _ = fitted
    assert returned is encoder
    learned = [k for k in vars(encoder) if k.endswith("_") and not k.startswith("_")]
    assert learned, "fit must set attributes ending in _"
    # __init__ stores parameters only: a fresh encoder has no learned state
    fresh = type(encoder)(**encoder.get_params())
    assert not [k for k in vars(fresh) if k.endswith("_") and not k.startswith("_")]


def test_transform_shape_and_dtype(fitted):
    encoder, _, X = fitted
    codes = encoder.transform(X)
    assert codes.shape == (X.shape[0], encoder.dim)
    assert codes.dtype == np.float32
    assert np.isfinite(_dense(codes)).all()


def test_save_load_gives_identical_codes(fitted, tmp_path):
    encoder, _, X = fitted
    encoder.save(tmp_path)
    loaded = load_encoder(encoder.name, tmp_path)
    assert type(loaded) is type(encoder)
    assert np.allclose(_dense(loaded.transform(X)), _dense(encoder.transform(X)), atol=1e-5)


def test_single_row_equals_batch(fitted):
    """The fast single-query path gives the batch path's codes."""
    encoder, _, X = fitted
    batch = _dense(encoder.transform(X[:20]))
    rows = np.vstack([_dense(encoder.transform(X[i:i + 1])) for i in range(3)])
    assert np.allclose(rows, batch[:3], atol=1e-4)


def test_fit_transform_equals_fit_then_transform():
    a = LSAEncoder(5, seed=3).fit_transform(TFIDF)
    b = LSAEncoder(5, seed=3).fit(TFIDF).transform(TFIDF)
    assert np.allclose(a, b)


def test_autoencoder_is_deterministic_with_a_seed():
    a = TextAutoencoder(hidden=(8,), code_dim=3, epochs=1, neighbours=0, seed=7).fit(TFIDF).transform(TFIDF)
    b = TextAutoencoder(hidden=(8,), code_dim=3, epochs=1, neighbours=0, seed=7).fit(TFIDF).transform(TFIDF)
    assert np.allclose(a, b, atol=1e-5)


def test_autoencoder_keeps_only_standard_layers(tmp_path):
    """encoder.keras must load in safe mode: no Lambda or custom layers."""
    enc = TextAutoencoder(hidden=(8,), code_dim=3, epochs=1, neighbours=0, noise=0.2).fit(TFIDF)
    assert enc.encoder_.name == "encoder" and enc.decoder_.name == "decoder"
    assert enc.decoder_.layers[-1].name == "words"  # softmax over the vocabulary
    enc.save(tmp_path)
    assert (tmp_path / "encoder.keras").exists() and not list(tmp_path.glob("*.pkl"))


def test_neighbour_targets_mix_in_neighbours():
    X = sp.csr_matrix(np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1], [0, 0.1, 0.9]], np.float32))
    P = sp.csr_matrix(np.eye(4, dtype=np.float32))  # each row a distribution
    T = _neighbour_targets(X, P, k=1, weight=0.5).toarray()
    assert np.allclose(T[0], 0.5 * P[0].toarray() + 0.5 * P[1].toarray())  # row 1 is row 0's neighbour
    assert np.allclose(T[2], [0, 0, 0.5, 0.5])
    assert np.allclose(T.sum(axis=1), 1)  # still distributions


def test_short_views_keep_a_few_words_of_each_row_renormalised():
    from retrieval.encoders.autoencoder.training import _sparse_tensor, short_views
    import tensorflow as tf

    X = sp.csr_matrix(TFIDF)
    full = (X != 0).toarray()
    views = tf.sparse.to_dense(short_views(_sparse_tensor(X), 1.0, seed=0)).numpy()
    kept = views != 0
    assert (kept <= full).all()  # only the row's own words
    assert (kept.sum(axis=1) >= 1).all() and kept.sum() < full.sum()  # never empty, fewer words
    assert np.allclose(np.linalg.norm(views, axis=1), 1, atol=1e-5)  # a short query's TF-IDF row is L2-normalised
    same = tf.sparse.to_dense(short_views(_sparse_tensor(X), 0.0, seed=0)).numpy()
    assert np.allclose(same, X.toarray(), atol=1e-6)  # fraction 0: the rows as they were


def test_autoencoder_trains_on_short_views():
    def fit():
        return TextAutoencoder(hidden=(8,), code_dim=3, epochs=2, neighbours=2, short_views=0.5, seed=1).fit(TFIDF)

    a = fit()
    assert a.get_params()["short_views"] == 0.5
    assert np.allclose(a.transform(TFIDF), fit().transform(TFIDF), atol=1e-5)  # seeded
    assert [layer.__class__.__name__ for layer in a.encoder_.layers] == ["InputLayer", "Dense", "Dense",
                                                                          "BatchNormalization"]


@pytest.mark.parametrize("bad", [dict(code_dim=0), dict(pretrain="greedy"), dict(noise=1.5), dict(short_views=2.0)])
def test_autoencoder_rejects_bad_params(bad):
    with pytest.raises(InputError):
        TextAutoencoder(**{"hidden": (8,), "epochs": 1, **bad}).fit(TFIDF)


def test_lsa_dimension_too_large():
    with pytest.raises(InputError, match="code dimension must be <"):
        LSAEncoder(10_000).fit(TFIDF)


def test_conv_autoencoder_odd_size():
    X = np.random.default_rng(1).integers(0, 256, size=(12, 10, 10, 3), dtype=np.uint8)
    codes = ConvAutoencoder(filters=(4, 8), code_dim=3, epochs=1).fit(X).transform(X)
    assert codes.shape == (12, 3)


def test_unknown_encoder_name():
    with pytest.raises(IndexFormatError, match="unknown encoder"):
        encoder_class("word2vec")


def test_numpy_fast_path_matches_keras_with_batchnorm():
    """The NumPy inference path (BatchNorm folded into the code layer) equals Keras' own forward pass."""
    enc = TextAutoencoder(hidden=(16,), code_dim=4, epochs=2, neighbours=2, code_norm=True).fit(TFIDF)
    assert any(layer.name == "code_norm" for layer in enc.encoder_.layers)
    ours = numpy_forward.forward(numpy_forward.dense_stack(enc.encoder_), TFIDF[:7])
    keras_codes = enc.encoder_(TFIDF[:7].toarray(), training=False).numpy()
    assert np.allclose(ours, keras_codes, atol=1e-4)


def _tfidf_like(n_rows: int, n_words: int, seed: int) -> sp.csr_matrix:
    """Random non-negative sparse rows of unit length, some of them empty, like TF-IDF."""
    X = sp.random(n_rows, n_words, density=0.05, format="csr", dtype=np.float32,
                  random_state=np.random.default_rng(seed))
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1))).ravel()
    scale = 1 / np.maximum(norms, 1e-12)
    scale[::17] = 0  # rows without a known word
    X = sp.csr_matrix(sp.diags(scale) @ X, dtype=np.float32)
    X.eliminate_zeros()
    return X


@pytest.mark.parametrize("noise", [0.0, 0.2])  # trained on sparse inputs / with a Dropout layer in the encoder
def test_numpy_forward_contract(noise):
    """numpy_forward.forward equals Keras' encoder_(x, training=False) on sparse and dense rows."""
    enc = TextAutoencoder(hidden=(16, 8), code_dim=4, epochs=2, batch_size=16, neighbours=2, noise=noise,
                          code_norm=True).fit(TFIDF)
    stack = numpy_forward.dense_stack(enc.encoder_)
    assert stack is not None and len(stack) == 3  # enc_0, enc_1, code (BatchNorm folded in)
    X = _tfidf_like(200, TFIDF.shape[1], seed=1)
    expected = enc.encoder_(X.toarray(), training=False).numpy()
    for rows in (X, X.toarray()):
        codes = numpy_forward.forward(stack, rows)
        assert codes.dtype == np.float32 and codes.shape == (200, 4)
        assert np.abs(codes - expected).max() <= 1e-5


def test_numpy_forward_imports_neither_tensorflow_nor_keras():
    path = Path(numpy_forward.__file__)
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('numpy_forward', {str(path)!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("cls", [TextAutoencoder, ConvAutoencoder])
def test_autoencoder_options_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(64)


def test_autoencoder_defaults_come_from_the_configs():
    for cls, config in ((TextAutoencoder, DocsConfig()), (ConvAutoencoder, ImagesConfig())):
        params = cls().get_params()
        shared = {f.name for f in dataclasses.fields(config)} & set(params)
        assert {"code_dim", "epochs", "batch_size", "learning_rate", "binary_epochs", "seed"} <= shared
        for name in shared:
            value = getattr(config, name)
            assert params[name] == (list(value) if isinstance(value, tuple) else value), name
        json.dumps(params)  # saved as params.json


def test_repeated_fits_print_no_retracing_warning(capfd, caplog):
    """Each fit makes Keras build new tf.functions; TensorFlow's per-code-object
    retracing counter must not turn them into an "excessive retracing" warning."""
    caplog.set_level(logging.WARNING, logger="tensorflow")
    for seed in range(6):  # one step per epoch: every call of the train function is a trace
        enc = TextAutoencoder(hidden=(8,), code_dim=4, epochs=1, batch_size=64, neighbours=0, seed=seed).fit(TFIDF)
        enc.transform(TFIDF.toarray())  # > 16 dense rows: the compiled TensorFlow path
        enc.reconstruction_error(TFIDF[:5])
    out, err = capfd.readouterr()
    assert "retracing" not in out + err + caplog.text


def test_retracing_filter_keeps_other_tensorflow_warnings(caplog):
    from retrieval.encoders.autoencoder.training import _quiet_step_retracing

    caplog.set_level(logging.WARNING, logger="tensorflow")
    tf_logger = logging.getLogger("tensorflow")
    with _quiet_step_retracing():
        tf_logger.warning("5 out of the last 6 calls to <function TensorFlowTrainer._make_function.<locals>"
                          ".multi_step_on_iterator> triggered tf.function retracing.")
        tf_logger.warning("5 out of the last 6 calls to <function my_step> triggered tf.function retracing.")
        tf_logger.error("a real error")
    assert "my_step" in caplog.text and "a real error" in caplog.text
    assert "TensorFlowTrainer" not in caplog.text
    assert not tf_logger.filters


def test_mirroring_in_the_geometric_corruption_can_be_turned_off():
    from retrieval.encoders.autoencoder.models import build_conv

    def layer_names(mirror):
        _, _, model = build_conv((8, 8, 1), filters=[4], code_dim=2, decoder="dense", noise=0.0, augment=0.125,
                                 code_norm=False, seed=0, mirror=mirror)
        return {layer.name for layer in model.get_layer("encoder").layers}

    assert {"jitter", "mirror"} <= layer_names(True)
    assert "jitter" in layer_names(False) and "mirror" not in layer_names(False)
