"""Saved autoencoders run in NumPy (numpy_graph) exactly as Keras runs them, and queries never import Keras."""
import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import synthetic_docs
from retrieval.encoders import load_encoder
from retrieval.encoders.autoencoder import ConvAutoencoder, TextAutoencoder, numpy_graph
from retrieval.errors import RetrievalWarning
from retrieval.vectorize import TextVectorizer

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
HEAVY = ("tensorflow", "keras")


def _keras(model, x):
    return model(x, training=False).numpy()


@pytest.fixture(scope="session")
def text_pair(tmp_path_factory):
    """A tiny fitted TextAutoencoder (Keras in memory), the same loaded from disk (NumPy), and TF-IDF rows."""
    docs = [text for _, text in synthetic_docs(n_per_topic=75, seed=3)]  # 300 documents
    X = TextVectorizer(max_features=200).fit_transform(docs)
    fitted = TextAutoencoder(hidden=[16], code_dim=8, epochs=2, neighbours=3, code_norm=True, seed=0).fit(X)
    folder = tmp_path_factory.mktemp("text_ae")
    fitted.save(folder)
    return fitted, load_encoder("text_autoencoder", folder), X


def _images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """Blobs on noise: structured enough for a decoder to learn something in one epoch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(0, size, (n, 2))
    blobs = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / (size / 2))
    pixels = 200 * blobs[..., None] * rng.uniform(0.3, 1, (n, 1, 1, channels)) + rng.uniform(0, 55, (n, size, size, channels))
    return np.clip(pixels, 0, 255).astype(np.uint8)


#: (size, channels, decoder, binarize): grey and RGB, the three decoders, float and binary (code_norm) codes,
#: sizes not divisible by 2**len(filters) (the deconv decoder then ends in Resizing; unpool pools an odd
#: row and column alone, then crops it back).
IMAGE_CASES = [(16, 1, "dense", "none"), (18, 3, "deconv", "none"), (14, 1, "deconv", "learned"),
               (15, 3, "unpool", "none")]


@pytest.fixture(scope="session", params=IMAGE_CASES, ids=lambda c: "-".join(map(str, c)))
def image_pair(request, tmp_path_factory):
    size, channels, decoder, binarize = request.param
    X = _images(300, size, channels)
    fitted = ConvAutoencoder(filters=[4, 8], code_dim=8, decoder=decoder, epochs=1, batch_size=32, augment=0.05,
                             noise=0.1, binarize=binarize, binary_epochs=1, seed=0).fit(X)
    folder = tmp_path_factory.mktemp("conv_ae")
    fitted.save(folder)
    return fitted, load_encoder("conv_autoencoder", folder), X


def test_text_codes_and_decoder_equal_keras(text_pair):
    fitted, loaded, X = text_pair
    assert loaded.__dict__["_encoder_graph"] is not None and "encoder_" not in loaded.__dict__
    dense = X.toarray()
    raw = loaded._predict(X)  # sparse rows straight into the NumPy graph
    assert raw.shape == (300, 8)
    assert np.abs(raw - _keras(fitted.encoder_, dense)).max() <= TOLERANCE
    assert np.abs(loaded.transform(X) - fitted.transform(X)).max() <= TOLERANCE
    decoded = loaded._decode(raw)
    assert np.abs(decoded - _keras(fitted.decoder_, raw)).max() <= TOLERANCE
    assert np.allclose(decoded.sum(axis=1), 1, atol=1e-4)  # the softmax over the vocabulary
    assert np.abs(loaded.reconstruction_error(X) - fitted.reconstruction_error(X)).max() <= TOLERANCE


def test_image_codes_and_decoder_equal_keras(image_pair):
    fitted, loaded, X = image_pair
    assert loaded.__dict__["_encoder_graph"] is not None and loaded.__dict__["_decoder_graph"] is not None
    scaled = X.astype(np.float32) / 255
    raw = loaded._predict(X)
    assert np.abs(raw - _keras(fitted.encoder_, scaled)).max() <= TOLERANCE
    if fitted.binary:
        assert np.array_equal(loaded.transform(X), fitted.transform(X)) or \
            np.mean(loaded.transform(X) != fitted.transform(X)) < 0.01  # a code within 1e-5 of a threshold may flip
    else:
        assert np.abs(loaded.transform(X) - fitted.transform(X)).max() <= TOLERANCE
    codes = np.where(raw > 0, 1.0, -1.0).astype(np.float32) if fitted.binary else raw
    if fitted.decoder == "unpool":
        # The decoder's further inputs: the encoder's activations before each pooling, NumPy == Keras.
        graph = loaded.__dict__["_encoder_graph"]
        _, *references = graph.run(scaled, outputs=[graph.output, *graph.pool_inputs])
        _, *keras_references = fitted._encode_with_references(scaled)
        assert [r.shape for r in references] == [(300, 15, 15, 4), (300, 8, 8, 8)]
        for mine, theirs in zip(references, keras_references):
            assert np.abs(mine - theirs).max() <= TOLERANCE
        decoded = loaded._decode(codes, *references)
        assert np.abs(decoded - _keras(fitted.decoder_, [codes, *references])).max() <= TOLERANCE
        # A code alone decodes too (zero references: nearest-neighbour upsampling), in both.
        assert np.abs(loaded._decode(codes) - fitted._decode(codes)).max() <= TOLERANCE
    else:
        decoded = loaded._decode(codes)
        assert np.abs(decoded - _keras(fitted.decoder_, codes)).max() <= TOLERANCE
    assert decoded.shape == X.shape
    assert np.abs(loaded.reconstruction_error(X) - fitted.reconstruction_error(X)).max() <= TOLERANCE


def test_loaded_autoencoder_saves_its_files_unchanged_without_keras(text_pair, tmp_path):
    _, loaded, X = text_pair
    loaded.save(tmp_path / "copy")
    for part in ("encoder", "decoder"):
        assert (tmp_path / "copy" / f"{part}.keras").read_bytes() == (loaded._files / f"{part}.keras").read_bytes()
    again = load_encoder("text_autoencoder", tmp_path / "copy")
    assert np.array_equal(again.transform(X[:5]), loaded.transform(X[:5]))


def test_unknown_layer_falls_back_to_keras_with_a_warning(tmp_path, text_pair):
    import keras

    fitted, _, X = text_pair
    inp = keras.Input((X.shape[1],))
    model = keras.Model(inp, keras.layers.LayerNormalization(name="odd")(keras.layers.Dense(8, name="code")(inp)))
    model.save(tmp_path / "encoder.keras")
    with pytest.raises(numpy_graph.Unsupported, match="'odd' of type LayerNormalization"):
        numpy_graph.load(tmp_path / "encoder.keras")
    (tmp_path / "params.json").write_text(json.dumps(fitted.get_params()))
    for attr in fitted._arrays:
        np.save(tmp_path / f"{attr}.npy", getattr(fitted, attr + "_"))
    with pytest.warns(RetrievalWarning, match="LayerNormalization does not run in NumPy; loading it with Keras"):
        loaded = load_encoder("text_autoencoder", tmp_path)
    assert np.abs(loaded._predict(X[:20]) - _keras(model, X[:20].toarray())).max() <= TOLERANCE


def test_corrupt_archive_is_an_index_format_error(tmp_path, text_pair):
    from retrieval.errors import IndexFormatError

    _, loaded, _ = text_pair
    folder = tmp_path / "bad"
    loaded.save(folder)
    (folder / "encoder.keras").write_bytes(b"not a zip")
    with pytest.raises(IndexFormatError, match="encoder.keras.*rebuild the index"):
        load_encoder("text_autoencoder", folder)


def test_v1_fixture_autoencoders_load_in_numpy():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RetrievalWarning)  # no Keras fallback for what this project saved
        for folder in sorted((ROOT / "tests/fixtures/v1/home").glob("*/methods/ae*")):
            params = json.loads((folder / "params.json").read_text())
            name = "conv_autoencoder" if "filters" in params else "text_autoencoder"
            encoder = load_encoder(name, folder)
            assert encoder.__dict__["_encoder_graph"] is not None, folder


def _run_cli_calls(calls: list[list[str]], home: Path, cwd: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        from retrieval import cli
        for args in {calls!r}:
            sys.argv = ["retrieval", *args]
            try:
                cli.main()
            except SystemExit as exc:
                if exc.code:
                    sys.exit(f"{{args}} exited with {{exc.code}}")
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "RETRIEVAL_HOME": str(home), "PYTHONPATH": str(ROOT)})


def test_cli_query_like_and_add_never_import_tensorflow(built_docs, built_images, tmp_path):
    store, name, corpus = built_docs
    home = tmp_path / "home"
    shutil.copytree(store.root, home)  # add writes: a copy, the session's index stays as it is
    new = tmp_path / "new" / "space"
    new.mkdir(parents=True)
    (new / "fresh.txt").write_text("fresh\norbit rocket launch nasa satellite moon\n")
    from retrieval import api

    like = api.search(store, name, "orbit rocket", k=1).hits[0].id
    image_store, image_name, image_root = built_images
    shutil.copytree(image_store.root, home, dirs_exist_ok=True)
    image = next(iter(sorted(image_root.rglob("*.png"))))
    result = _run_cli_calls([["query", name, "orbit rocket nasa", "-k", "3", "--json"],
                             ["query", name, "--like", like, "-k", "2", "--json"],
                             ["add", name, str(tmp_path / "new"), "--labels-from-folders"],
                             ["query", name, "moon satellite", "--json"],
                             ["query", image_name, str(image), "-k", "2", "--json"]], home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]
    assert "novelty of the query" in result.stderr  # the decoder ran too (in NumPy)


def test_cli_module_import_is_light():
    code = ("import sys, retrieval.cli; print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'faiss', "
            "'sklearn', 'httpx', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_graph_runs_sparse_rows_sparse_and_empty_batches(text_pair):
    _, loaded, X = text_pair
    graph = loaded.__dict__["_encoder_graph"]
    assert np.abs(graph(X[:7]) - graph(X[:7].toarray())).max() <= TOLERANCE
    assert graph(sp.csr_matrix((0, X.shape[1]), dtype=np.float32)).shape == (0, 8)
