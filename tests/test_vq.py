"""VQ-VAE codes and product quantisation (issue 14): NumPy quantiser, PQ index, encoder, builds, CLI."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from retrieval import Store, build_docs_index
from retrieval.ann import PQIndex, load_index, make_index
from retrieval.config import DocsConfig, ImagesConfig
from retrieval.encoders import load_encoder
from retrieval.encoders.vq import assign, check_decay, check_quantizer, decode, kmeans_codebook, restart_dead, split_groups, usage
from retrieval.errors import InputError
from retrieval.evaluate import evaluate_index, load_queries
from retrieval.search import Retriever
from conftest import TINY_DOCS, synthetic_docs, write_corpus
from test_cli import run

rng = np.random.default_rng(0)
# 16-d vectors around 40 centres: 4 groups of 4 dimensions.
CENTRES = rng.standard_normal((40, 16)).astype(np.float32)
VECTORS = (CENTRES[rng.integers(0, 40, 3000)] + 0.1 * rng.standard_normal((3000, 16))).astype(np.float32)
CODEBOOK = kmeans_codebook(split_groups(VECTORS, 4, False), 32, iterations=10)


def _brute_assign(parts, codebook):
    d = ((parts[:, :, None, :] - codebook[None]) ** 2).sum(axis=3)
    return d.argmin(axis=2)


# -- the NumPy quantiser ---------------------------------------------------------------
def test_assign_is_the_nearest_entry_and_decode_inverts_it():
    parts = split_groups(VECTORS[:500], 4, False)
    codes = assign(parts, CODEBOOK, batch=64)  # several blocks
    assert codes.dtype == np.uint8 and codes.shape == (500, 4)
    assert np.array_equal(codes, _brute_assign(parts, CODEBOOK))
    # An entry's nearest entry is itself: decoding then re-assigning changes nothing.
    again = assign(split_groups(decode(codes, CODEBOOK), 4, False), CODEBOOK)
    assert np.array_equal(again, codes)
    # Quantisation error is far below the spread of the data.
    assert np.mean((decode(codes, CODEBOOK) - VECTORS[:500]) ** 2) < 0.2 * VECTORS.var()


def test_unit_groups_have_unit_length():
    parts = split_groups(VECTORS, 4, True)
    assert np.allclose(np.linalg.norm(parts, axis=2), 1, atol=1e-5)
    unit = kmeans_codebook(parts, 16, unit=True, iterations=5)
    assert unit.shape == (4, 16, 4) and np.allclose(np.linalg.norm(unit, axis=2), 1, atol=1e-5)
    # A zero group stays finite (no division by zero).
    assert np.isfinite(split_groups(np.zeros((2, 16)), 4, True)).all()


def test_kmeans_codebook_with_fewer_rows_than_entries():
    codebook = kmeans_codebook(split_groups(VECTORS[:10], 4, False), 32, iterations=2)
    assert codebook.shape == (4, 32, 4) and np.isfinite(codebook).all()


def test_restart_moves_only_dead_entries_onto_encodings():
    parts = split_groups(VECTORS[:1000], 4, False)
    dead = CODEBOOK.copy()
    dead[:, :5] = 1e3  # far from every row: never chosen
    fixed, n = restart_dead(dead, parts, np.random.default_rng(0))
    assert n == 4 * 5
    assert np.array_equal(fixed[:, 5:], dead[:, 5:])  # live entries untouched
    assert np.abs(fixed[:, :5]).max() < 10  # moved onto the data
    assert usage(assign(parts, fixed), 32).min() > usage(assign(parts, dead), 32).max() - 1e-9
    assert restart_dead(fixed, parts[:0], np.random.default_rng(0))[1] == 0  # no rows: nothing to move to


@pytest.mark.parametrize("groups, codebook, dim, message", [
    (3, 256, 32, "multiple of --groups"), (0, 256, 32, "--groups must be"), (8, 300, 32, "--codebook must be"),
    (8, 1, 32, "got 1"), (True, 256, 32, "--groups must be")])
def test_check_quantizer_names_the_bad_value(groups, codebook, dim, message):
    with pytest.raises(InputError, match=message):
        check_quantizer(groups, codebook, dim)


# -- the PQ index ------------------------------------------------------------------------
def _adc(queries, codes, codebook):
    return ((queries[:, None, :] - decode(codes, codebook)[None]) ** 2).sum(axis=2)


def test_pq_index_with_a_learned_codebook_is_exact_adc(tmp_path):
    index = make_index("auto", "l2", 3000, pq_groups=4)
    assert isinstance(index, PQIndex) and index.trained
    index.train(None, 3000, codebook=CODEBOOK)  # 32 entries, padded to 256 for FAISS
    index.add(VECTORS)
    codes = index.codes()
    assert codes.shape == (3000, 4) and codes.max() < 32
    assert np.array_equal(codes, assign(split_groups(VECTORS, 4, False), CODEBOOK))
    queries = VECTORS[:20] + 0.3
    scores, positions = index.search(queries, 10)
    exact = _adc(queries, codes, CODEBOOK)
    assert np.allclose(-scores ** 2, -np.sort(exact, axis=1)[:, :10], rtol=1e-3, atol=1e-3)
    assert np.allclose(np.take_along_axis(exact, positions, 1), scores ** 2, rtol=1e-3, atol=1e-3)
    index.save(tmp_path)
    index.save_template(tmp_path)
    loaded = load_index("pq", tmp_path, "l2", index.search_params())
    assert np.array_equal(loaded.search(queries, 10)[1], positions) and loaded.groups == 4
    # A new segment's empty index keeps the codebook (the template).
    from retrieval.ann import empty_index

    fresh = empty_index("pq", tmp_path, "l2", index.search_params())
    fresh.add(VECTORS[:50])
    assert np.array_equal(fresh.codes(), codes[:50])


def test_pq_baseline_learns_its_centroids_and_scores_cosines():
    index = PQIndex("cosine", 4)
    index.train(VECTORS, len(VECTORS))
    index.add(VECTORS)
    scores, positions = index.search(VECTORS[:30], 5)
    assert (positions[:, 0] == np.arange(30)).mean() > 0.5 or (scores[:, 0] > 0.95).all()
    assert (scores <= 1.01).all() and (scores[:, 0] > 0.9).all()
    # Fewer rows than centroids still train (tests, tiny collections).
    small = PQIndex("l2", 4)
    small.train(VECTORS[:20], 20)
    small.add(VECTORS[:20])
    assert small.search(VECTORS[:3], 1)[1].ravel().tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="multiple of 3"):
        PQIndex("l2", 3).train(VECTORS, 3000)


def test_pq_index_deletions_and_combine():
    from retrieval.ann import Deletions

    a, b = PQIndex("l2", 4), None
    a.train(None, 0, codebook=CODEBOOK)
    b = a.template()
    a.add(VECTORS[:100])
    b.add(VECTORS[100:200])
    gone = Deletions(np.arange(0, 100, 2), 100)
    _, positions = a.search_live(VECTORS[:10], 5, gone)
    assert not np.isin(positions, gone.positions).any()
    both = PQIndex.combine([a, b])
    assert len(both) == 200 and np.array_equal(both.codes()[100:], assign(split_groups(VECTORS[100:200], 4, False),
                                                                          CODEBOOK))


@pytest.mark.parametrize("decay", [1.0, -0.1, True, "0.99"])
def test_check_decay_names_the_bad_value(decay):
    with pytest.raises(InputError, match="codebook_decay must be 0 .*got"):
        check_decay(decay)
    with pytest.raises(InputError, match="codebook_decay must be"):
        DocsConfig(quantize="vq", codebook_decay=decay)
    assert check_decay(0) == 0.0 and check_decay(0.99) == 0.99


# -- the training quantiser: codebook by moving averages or by its own loss -----------------
def _quantizer(decay):
    from retrieval.encoders.autoencoder.models import VectorQuantizer

    g = np.random.default_rng(1)
    centres = (3 * g.standard_normal((2, 4, 3))).astype(np.float32)  # 2 groups, 4 entries of 3 dims
    picks = g.integers(0, 4, (400, 2))
    z = (np.concatenate([centres[0][picks[:, 0]], centres[1][picks[:, 1]]], axis=1)
         + 0.1 * g.standard_normal((400, 6))).astype(np.float32)
    means = np.stack([[z[picks[:, k] == e, 3 * k:3 * k + 3].mean(axis=0) for e in range(4)] for k in range(2)])
    q = VectorQuantizer(2, 4, beta=0.25, decay=decay)
    q.build((None, 6))
    q.load(centres + 0.2)
    return q, z, means


def test_ema_codebook_moves_to_the_mean_of_its_encodings():
    import keras

    q, z, means = _quantizer(0.5)
    assert not q.codebook.trainable
    start = keras.ops.convert_to_numpy(q.codebook)
    out = keras.ops.convert_to_numpy(q(z, training=False))
    assert np.array_equal(keras.ops.convert_to_numpy(q.codebook), start)  # inference leaves it alone
    # The forward pass gives the nearest entries (straight-through values).
    nearest = np.stack([start[k][_brute_assign(z.reshape(-1, 2, 3), start)[:, k]] for k in range(2)], axis=1)
    assert np.allclose(out, nearest.reshape(len(z), 6), atol=1e-5)
    for _ in range(25):
        q(z, training=True)
    learned = keras.ops.convert_to_numpy(q.codebook)
    assert np.abs(start - means).max() > 0.15 and np.abs(learned - means).max() < 1e-3
    counts = keras.ops.convert_to_numpy(q.ema_count)
    assert np.allclose(counts.sum(axis=1), len(z), rtol=1e-3)
    # A restarted entry starts with its group's mean count; the others keep theirs.
    moved = learned.copy()
    moved[0, 1] += 1.0
    q.load(moved)
    after = keras.ops.convert_to_numpy(q.ema_count)
    assert np.isclose(after[0, 1], counts[0].mean()) and np.array_equal(np.delete(after[0], 1), np.delete(counts[0], 1))
    assert np.allclose(keras.ops.convert_to_numpy(q.ema_sum), moved * after[..., None], atol=1e-4)


def test_codebook_by_its_own_loss_is_trainable_and_not_averaged():
    import keras

    q, z, _ = _quantizer(0.0)
    assert q.codebook.trainable and not hasattr(q, "ema_count")
    start = keras.ops.convert_to_numpy(q.codebook)
    q(z, training=True)
    assert np.array_equal(keras.ops.convert_to_numpy(q.codebook), start)  # only a gradient step moves it
    own_loss = float(keras.ops.convert_to_numpy(q.losses[-1]))
    ema, _, _ = _quantizer(0.5)
    ema(z, training=False)
    # Both add the commitment loss beta * M; only this one adds the codebook loss M: (1 + beta) / beta = 5.
    assert np.isclose(own_loss, 5 * float(keras.ops.convert_to_numpy(ema.losses[-1])), rtol=1e-4)


# -- the VQ autoencoder ------------------------------------------------------------------
DOCS = synthetic_docs(20)


@pytest.fixture(scope="module", params=["whitened", "groups"])
def text_vq(request):
    from retrieval.encoders.autoencoder import TextAutoencoder
    from retrieval.vectorize import TextVectorizer

    X = TextVectorizer().fit_transform([t for _, t in DOCS])
    # The whitened space without unit groups: the whole code's length is then the map's alone.
    enc = TextAutoencoder(hidden=(16,), code_dim=8, epochs=3, batch_size=32, neighbours=0, quantize="vq",
                          groups=4, codebook=16, vq_epochs=2, vq_space=request.param,
                          unit_groups=request.param == "groups")
    return enc, enc.fit(X), X


def test_vq_encoder_with_the_codebook_by_its_own_loss(text_vq):
    from retrieval.encoders.autoencoder import TextAutoencoder

    ema, _, X = text_vq
    assert ema.codebook_decay == 0.99
    if ema.vq_space != "groups":
        pytest.skip("the codebook update does not depend on the space: tested in the default one")
    own = TextAutoencoder(**{**ema.get_params(), "codebook_decay": 0.0, "epochs": 1, "vq_epochs": 1}).fit(X)
    assert own.codebook_.shape == (4, 16, 2) and own.codes(X).shape == (X.shape[0], 4)
    assert not np.allclose(own.codebook_, ema.codebook_)


def test_vq_encoder_contract(text_vq):
    enc, returned, X = text_vq
    assert returned is enc and enc.metric == "l2" and not enc.binary and enc.dim == 8
    assert enc.codebook_.shape == (4, 16, 2)
    vectors = enc.transform(X)
    assert vectors.dtype == np.float32 and vectors.shape == (X.shape[0], 8)
    if enc.vq_space == "groups":  # each group and entry unit length
        assert np.allclose(np.linalg.norm(enc.codebook_, axis=2), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(vectors.reshape(-1, 4, 2), axis=2), 1, atol=1e-5)
    else:  # centred on the float phase's mean, projected, the whole code at length sqrt(groups)
        from retrieval.encoders.vq import to_whitened

        raw = enc._predict(X)
        y = (raw - enc.vq_mean_) @ enc.vq_projection_
        assert np.allclose(vectors, 2 * y / np.linalg.norm(y, axis=1, keepdims=True), atol=1e-5)
        assert np.allclose(vectors, to_whitened(raw, enc.vq_mean_, enc.vq_projection_, 4), atol=1e-6)
        assert not np.allclose(enc.vq_mean_, 0)  # centred (documents are not whitened: whiten 0, P = I)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 2, atol=1e-4)
        # The decoder reads each item's codebook entries mapped back into the raw space.
        back = enc.decoder_codes(X)
        entries = decode(enc.codes(X), enc.codebook_)
        assert np.allclose(back, entries @ enc.vq_inverse_ + enc.vq_mean_, atol=1e-5)
    codes = enc.codes(X)
    assert codes.dtype == np.uint8 and codes.shape == (X.shape[0], 4) and codes.max() < 16
    history = enc.history_["vq"]
    assert len(history["loss"]) >= 1 and len(history["restarted"]) == len(history["loss"])
    # Same-topic documents share codes more often than different topics do.
    labels = np.array([label for label, _ in DOCS])
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    agree = (codes[:, None, :] == codes[None]).mean(axis=2)
    assert agree[same].mean() > 1.5 * agree[~same & ~np.eye(len(labels), dtype=bool)].mean()


def test_vq_encoder_persists_and_loads_without_keras(text_vq, tmp_path):
    enc, _, X = text_vq
    enc.save(tmp_path)
    assert (tmp_path / "codebook.npy").exists()
    assert (tmp_path / "vq_inverse.npy").exists() == (enc.vq_space == "whitened")
    loaded = load_encoder("text_autoencoder", tmp_path)
    assert loaded.vq_space == enc.vq_space
    assert np.array_equal(loaded.codes(X), enc.codes(X))
    assert np.allclose(loaded.transform(X), enc.transform(X), atol=1e-5)
    assert np.allclose(loaded.reconstruction_error(X[:5]), enc.reconstruction_error(X[:5]), rtol=1e-4)


def test_a_vq_encoder_saved_before_vq_space_existed_loads_as_groups(text_vq, tmp_path, monkeypatch):
    """Its params.json has no ``vq_space``: it quantised raw groups, and goes on doing so whatever the default."""
    import json

    from retrieval.encoders.autoencoder import TextAutoencoder

    enc, _, X = text_vq
    if enc.vq_space != "groups":
        pytest.skip("the older encoders quantised groups")
    enc.save(tmp_path)
    params = json.loads((tmp_path / "params.json").read_text())
    del params["vq_space"]
    (tmp_path / "params.json").write_text(json.dumps(params))
    # A later default must not reach an older index.
    monkeypatch.setitem(TextAutoencoder.__init__.__kwdefaults__, "vq_space", "whitened")
    assert TextAutoencoder().vq_space == "whitened"
    loaded = load_encoder("text_autoencoder", tmp_path)
    assert loaded.vq_space == "groups" and np.array_equal(loaded.codes(X), enc.codes(X))


def test_the_whitened_space_maps_and_its_keras_layer_agree():
    """NumPy's map into the whitened space equals the training graph's; the way back restores the median norm."""
    from retrieval.encoders.autoencoder.models import _FixedAffine
    from retrieval.encoders.vq import to_whitened, whitened_space

    rng = np.random.default_rng(0)
    codes = (rng.normal(size=(500, 8)) * np.array([5, 3, 2, 1, 1, 0.5, 0.2, 0.1]) + 3).astype(np.float32)
    mean, projection, inverse = whitened_space(codes, groups=4, whiten=0.25)
    u = to_whitened(codes, mean, projection, 4)
    keras_u = np.asarray(_FixedAffine(projection, before=mean, length=2.0)(codes))
    assert np.allclose(u, keras_u, atol=1e-5)
    assert np.allclose(np.linalg.norm(u, axis=1), 2, atol=1e-5)
    back = np.asarray(_FixedAffine(inverse, after=mean)(u))
    assert np.allclose(back, u @ inverse + mean, atol=1e-4)
    # Back in the raw space: every direction kept, every norm the median one.
    y = (codes - mean) @ projection
    scale = np.median(np.linalg.norm(y, axis=1))
    assert np.allclose((back - mean) @ projection, y / np.linalg.norm(y, axis=1, keepdims=True) * scale, atol=1e-3)
    # Whitening: the variances of the centred codes come out closer to each other.
    spread = lambda v: v.max() / v.min()  # noqa: E731
    assert spread(((codes - mean) @ projection).var(axis=0)) < spread((codes - mean).var(axis=0)) / 10


def test_vq_float_phase_and_errors(text_vq):
    enc, _, X = text_vq
    flt = enc.derive("none", X)
    assert flt.quantize == "none" and flt.metric == "cosine" and flt.transform(X).shape == (X.shape[0], 8)
    from retrieval.encoders.autoencoder import TextAutoencoder

    with pytest.raises(RuntimeError, match="quantize='vq'"):
        flt.codes(X)
    with pytest.raises(InputError, match="--quantize must be"):
        TextAutoencoder(code_dim=8, quantize="pq").fit(X)
    with pytest.raises(InputError, match="exclude each other"):
        TextAutoencoder(code_dim=8, quantize="vq", binarize="learned").fit(X)


# -- builds, evaluation, the command line ---------------------------------------------------
@pytest.fixture(scope="module")
def vq_docs(tmp_path_factory):
    base = tmp_path_factory.mktemp("vq_docs")
    write_corpus(base / "corpus", synthetic_docs())
    write_corpus(base / "queries", synthetic_docs(n_per_topic=5, seed=1), prefix="q")
    store = Store(base / "home")
    config = replace(TINY_DOCS, code_dim=8, baseline_dim=8, quantize="vq", groups=4, codebook=16, vq_epochs=2)
    manifest = build_docs_index(base / "corpus", "vq", config, store=store)
    return store, manifest, base


def test_build_with_vq_has_pq_methods_at_equal_bytes(vq_docs):
    store, manifest, _ = vq_docs
    methods = manifest["methods"]
    assert {"ae", "pq-ae", "lsa", "pq-lsa", "tfidf"} == set(methods)
    for name in ("ae", "pq-ae", "pq-lsa"):
        assert methods[name]["index"] == "pq" and methods[name]["search"] == {"groups": 4}
    assert methods["ae"]["metric"] == "l2" and methods["ae"]["training"]["vq_epochs"] >= 1
    assert methods["pq-ae"]["derived_from"] == "ae"
    # The same file for the three: 4 bytes of code per item plus FAISS' header and
    # 256 centroids per group (which dominate on 120 items, not on 11,000).
    sizes = {methods[name]["bytes_per_item"] for name in ("ae", "pq-ae", "pq-lsa")}
    assert len(sizes) == 1
    n = manifest["counts"]["items"]
    assert sizes.pop() * n < 4 * n + 4 * 256 * 2 * 4 + 1024


def test_vq_index_searches_and_evaluates(vq_docs):
    store, _, base = vq_docs
    retriever = Retriever("vq", store)
    hits = retriever.search("rocket orbit launch", 5)
    assert len(hits) == 5
    report = evaluate_index(retriever, load_queries(retriever, base / "queries", labels_from_folders=True),
                            k=10, latency_samples=2)
    rows = report["methods"]
    assert {"ae", "pq-ae", "pq-lsa"} <= set(rows)
    assert rows["ae"]["precision@10"] > 0.5 and rows["pq-lsa"]["precision@10"] > 0.5  # 4 topics: chance 0.25


def test_vq_index_grows_with_the_same_codebook(vq_docs):
    from retrieval.api import Index

    store, manifest, _ = vq_docs
    index = Index.open("vq", store)
    before = len(index)
    index.add(["rocket launch orbit satellite"], labels=["space"], ids=["new-space"])
    assert len(index) == before + 1
    # The new segment quantises with the same codebook: the new item's score for
    # its own text is the distance of that text's float code to its decoded code.
    text = "rocket launch orbit satellite"
    hits = index.search(text, len(index))
    score = {h.id: h.score for h in hits}["new-space"]
    retriever = index.retriever
    encoder, _ = retriever.method("ae")
    X = retriever.query_inputs([text])
    own = decode(encoder.codes(X), encoder.codebook_)
    assert score == pytest.approx(-np.linalg.norm(encoder.transform(X) - own), abs=1e-3)


def test_vq_query_imports_no_tensorflow(vq_docs):
    store, _, _ = vq_docs
    code = ("import sys\nfrom retrieval import Store\nfrom retrieval.search import Retriever\n"
            f"r = Retriever('vq', Store({str(store.root)!r}))\n"
            "assert len(r.search('rocket orbit', 3)) == 3\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_config_and_cli_errors(monkeypatch, capsys, docs_dir):
    with pytest.raises(InputError, match="--quantize must be one of"):
        DocsConfig(quantize="pq")
    with pytest.raises(InputError, match="exclude each other"):
        DocsConfig(quantize="vq", bits=64)
    with pytest.raises(InputError, match="--baseline-dim 12"):
        ImagesConfig(quantize="vq", code_dim=32, baseline_dim=12)
    assert DocsConfig(quantize="vq").groups == 8 and ImagesConfig(quantize="vq").codebook == 256
    with pytest.raises(InputError, match="vq_space.*'raw'"):
        DocsConfig(quantize="vq", vq_space="raw")
    code, _, err = run(monkeypatch, capsys, "index", "docs", docs_dir, "--name", "x", "--quantize", "vq",
                       "--groups", "5")
    assert code == 1 and err.startswith("error:") and "multiple of --groups (5)" in err


def test_cli_quantize_builds(monkeypatch, capsys, docs_dir):
    code, out, err = run(monkeypatch, capsys, "index", "docs", docs_dir, "--name", "v", "--code-dim", "8",
                         "--hidden", "16", "--epochs", "1", "--neighbours", "0", "--baselines", "lsa",
                         "--baseline-dim", "8", "--quantize", "vq", "--groups", "2", "--codebook", "8",
                         "--vq-epochs", "1", "--json")
    assert code == 0, err
    methods = json.loads(out)["methods"]
    assert methods["ae"]["index"] == "pq" and set(methods) == {"ae", "pq-ae", "lsa", "pq-lsa"}


def test_an_image_vq_encoder_in_the_whitened_space():
    """The convolutional autoencoder quantises centred, whitened codes; a loaded copy encodes and decodes alike."""
    import tempfile
    from pathlib import Path

    from retrieval.encoders.autoencoder import ConvAutoencoder

    rng = np.random.default_rng(1)
    images = np.zeros((96, 8, 8, 1), np.uint8)
    for i in range(96):  # bars at one of four rows, with a little noise
        images[i, 2 * (i % 4):2 * (i % 4) + 2] = 200
    images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255).astype(np.uint8)
    enc = ConvAutoencoder(code_dim=8, filters=(4, 8), epochs=2, batch_size=16, quantize="vq", groups=4, codebook=8,
                          vq_epochs=1, whiten=0.25, vq_space="whitened", unit_groups=False).fit(images)
    assert enc.vq_space == "whitened" and enc.codebook_.shape == (4, 8, 2)
    vectors = enc.transform(images)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 2, atol=1e-4)
    entries = decode(enc.codes(images), enc.codebook_)  # each group's nearest entry: no other is nearer
    assert np.all(((vectors - entries) ** 2).reshape(-1, 4, 2).sum(axis=2)
                  <= ((vectors.reshape(-1, 4, 1, 2) - enc.codebook_[None]) ** 2).sum(axis=3).min(axis=2) + 1e-5)
    with tempfile.TemporaryDirectory() as folder:
        enc.save(Path(folder))
        loaded = load_encoder("conv_autoencoder", Path(folder))
        assert np.array_equal(loaded.codes(images), enc.codes(images))
        assert np.allclose(loaded.reconstruct(images[:4]).astype(int), enc.reconstruct(images[:4]).astype(int), atol=1)


def test_a_frozen_encoder_keeps_its_float_phase_weights(text_vq):
    """``vq_freeze_encoder``: the VQ phase learns the codebook and the decoder around the float codes."""
    from retrieval.encoders.autoencoder import TextAutoencoder

    trained, _, X = text_vq
    if trained.vq_space != "whitened":
        pytest.skip("one space is enough")
    enc = TextAutoencoder(**{**trained.get_params(), "vq_freeze_encoder": True}).fit(X)
    assert all(np.array_equal(a, b) for a, b in zip(enc.encoder_.get_weights(), enc.phase_one_))
    assert enc.encoder_.trainable  # restored for whatever trains it next
    assert not all(np.array_equal(a, b) for a, b in zip(trained.encoder_.get_weights(), trained.phase_one_))
    assert enc.codebook_.shape == (4, 16, 2) and enc.codes(X).shape == (X.shape[0], 4)
