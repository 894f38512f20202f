"""Semantic hashing (issue #4): learned binary codes, Hamming indexes, two-stage search."""
import json
from dataclasses import replace

import numpy as np
import pytest

from retrieval import Store, build_docs_index, build_images_index
from retrieval.config import DocsConfig
from retrieval.encoders import load_encoder
from retrieval.encoders.autoencoder import ConvAutoencoder, TextAutoencoder
from retrieval.encoders.hashing import hamming_distances
from retrieval.errors import InputError, RetrievalWarning
from retrieval.evaluate import default_methods, evaluate_index, load_queries
from retrieval.ann import BinaryFlatIndex, BinaryIVFIndex, BinaryPrunedIndex, Deletions, load_index, make_index
from retrieval.search import Retriever
from retrieval.vectorize import TextVectorizer
from conftest import TINY_DOCS, TINY_IMAGES, synthetic_docs, synthetic_images, write_corpus
from test_cli import run

rng = np.random.default_rng(0)
# Clustered 64-bit codes: 20 centres, each item flips ~8 % of its centre's bits.
CENTRES = rng.integers(0, 2, (20, 64), dtype=np.uint8)
BITS = CENTRES[rng.integers(0, 20, 2000)] ^ (rng.random((2000, 64)) < 0.08)
CODES = np.packbits(BITS, axis=1)
BINARY_KINDS = [BinaryFlatIndex, BinaryIVFIndex, BinaryPrunedIndex]


# -- Hamming indexes --------------------------------------------------------------
def test_flat_hamming_equals_brute_force():
    index = BinaryFlatIndex()
    index.add(CODES)
    scores, positions = index.search(CODES[:30], 50)
    exact = hamming_distances(CODES[:30], CODES)
    # Same distances in the same order (ties may list different items).
    assert np.array_equal(-scores, np.sort(exact, axis=1)[:, :50])
    assert np.array_equal(np.take_along_axis(exact, positions, 1), -scores)
    assert (positions[:, 0] == np.arange(30)).all() or (scores[:, 0] == 0).all()


@pytest.mark.parametrize("threads", [2, 3])
def test_split_hamming_scan_equals_the_whole_scan(monkeypatch, threads):
    """A few queries over a large flat index scan it in parts on threads: same hits, ties in FAISS' order."""
    import faiss

    from retrieval import ann

    index = BinaryFlatIndex()
    index.add(CODES)
    queries = np.concatenate([CODES[:6], CODES[:3] ^ np.uint8(1)])
    whole = index.search(queries, 50)  # below SPLIT_SCAN_CODES: one FAISS scan
    before = faiss.omp_get_max_threads()
    monkeypatch.setattr(ann, "SPLIT_SCAN_CODES", 1)
    faiss.omp_set_num_threads(threads)
    try:
        parts = index._scan_parts()
        assert len(parts) == threads and sum(part.ntotal for part, _ in parts) == len(CODES)
        for k in (1, 10, 50):
            for one in range(len(queries)):
                split = index.search(queries[one:one + 1], k)
                assert np.array_equal(split[0], whole[0][one:one + 1, :k])
                assert np.array_equal(split[1], whole[1][one:one + 1, :k])  # ties too: (distance, position)
        small = BinaryFlatIndex()
        small.add(CODES[:4])  # parts smaller than k: their missing hits (-1) sort last and are never returned
        assert sorted(small.search(CODES[:1], 10)[1][0].tolist()) == [0, 1, 2, 3]
        index.add(CODES[:5])  # an add rebuilds the parts
        assert sum(part.ntotal for part, _ in index._scan_parts()) == len(CODES) + 5
        split = index.search(CODES[:2], 20)
        monkeypatch.setattr(ann, "SPLIT_SCAN_CODES", 10**9)
        assert index._scan_parts() is None
        assert all(np.array_equal(a, b) for a, b in zip(split, index.search(CODES[:2], 20)))
    finally:
        faiss.omp_set_num_threads(before)



def test_pruned_search_equals_the_flat_scan_ties_included():
    """Exact: the same hits as the flat scan, ties by position, also without removed rows, in a ball, after an add."""
    flat, pruned = BinaryFlatIndex(), BinaryPrunedIndex(nlist=40)
    flat.add(CODES)
    pruned.add(CODES)
    # Queries near a centre, exactly on a stored code, and far from every centre (many ties at the k-th distance).
    queries = np.concatenate([np.packbits(CENTRES[:6] ^ (rng.random((6, 64)) < 0.08), axis=1), CODES[:4],
                              rng.integers(0, 256, (4, 8), dtype=np.uint8)])
    for k in (1, 10, 100, len(CODES)):
        want, got = flat.search(queries, k), pruned.search(queries, k)
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
        one = pruned.search(queries[:1], k)  # one query alone (the batch path above spreads over threads)
        assert np.array_equal(one[1], want[1][:1])
    for share in (0.05, 0.35, 0.97):  # removed rows: k kept rows found in more cells as they thin out
        removed = Deletions(np.sort(rng.choice(len(CODES), int(share * len(CODES)), replace=False)), len(CODES))
        for k in (1, 20, 80):
            want, got = flat.search_live(queries, k, removed), pruned.search_live(queries, k, removed)
            assert np.array_equal(want[1], got[1]) and np.array_equal(want[0], got[0])
            assert not np.isin(got[1], removed.positions).any()
    # The codes by position come from the lists: no direct map is added to the shared FAISS index.
    assert np.array_equal(pruned.stored(), CODES) and pruned.index_.direct_map.type == 0
    for radius in (0, 5, 12):
        assert np.array_equal(np.sort(flat.within(queries[:1], radius)[1]), np.sort(pruned.within(queries[:1], radius)[1]))
    # The pruning does work: a query at a centre scans a few of the 40 cells.
    centroids, radii, sizes = pruned._cells()[:3]
    assert (radii[sizes > 0] >= 0).all() and sizes.sum() == len(CODES)
    to_cell = np.bitwise_count(centroids ^ queries[0].view(centroids.dtype)).sum(axis=1)
    bound = int(-flat.search(queries[:1], 10)[0][0, -1])
    assert sizes[(to_cell - radii <= bound) & (sizes > 0)].sum() < len(CODES) / 2
    far = np.packbits(1 - CENTRES[:1], axis=1)
    pruned.add(far)  # a code far from its cell's centroid grows that cell's radius
    flat.add(far)
    assert np.array_equal(flat.search(far, 5)[1], pruned.search(far, 5)[1])
    assert pruned.search(far, 1)[1][0, 0] == len(CODES)



def test_cells_trained_on_a_small_sample_are_relearned_from_every_code():
    """A build trains on its sample (few cells: FAISS' minimum of codes a cell), then relearns them from all codes."""
    from retrieval.ann import MIN_CODES_PER_CELL

    pruned = BinaryPrunedIndex()
    pruned.train(CODES[:200], len(CODES))  # sized for 2,000 codes (51 cells), trained on 200
    assert pruned.index_.nlist == 200 // MIN_CODES_PER_CELL and pruned.factory == "BIVF5"
    pruned.add(CODES)
    settled = pruned.settled()
    assert settled.index_.nlist == BinaryPrunedIndex.cells_for(len(CODES)) == 51 and settled.factory == "BIVF51"
    assert settled.settled() is settled and len(settled) == len(CODES)
    flat = BinaryFlatIndex()
    flat.add(CODES)
    for index in (pruned, settled):
        assert np.array_equal(index.search(CODES[:20], 30)[1], flat.search(CODES[:20], 30)[1])
    ivf = BinaryIVFIndex()  # the approximate binary IVF keeps the cells sized for the collection
    ivf.train(CODES[:200], len(CODES))
    assert ivf.index_.nlist == 51 and ivf.settled() is ivf


@pytest.mark.parametrize("backend", BINARY_KINDS)
def test_binary_backends_save_load_identical(backend, tmp_path):
    index = backend()
    index.add(CODES)
    before = index.search(CODES[:10], 20)
    index.save(tmp_path)
    loaded = load_index(backend.kind, tmp_path, "hamming")
    after = loaded.search(CODES[:10], 20)
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert len(loaded) == len(CODES) and loaded.bits == 64


def test_binary_ivf_recall_against_exact_scan():
    flat, ivf = BinaryFlatIndex(), BinaryIVFIndex(nprobe=4)
    flat.add(CODES)
    ivf.add(CODES)
    queries = np.packbits(CENTRES[:10] ^ (rng.random((10, 64)) < 0.08), axis=1)
    exact, _ = flat.search(queries, 20)
    got, positions = ivf.search(queries, 20)
    # Tie-aware recall: a hit counts when it is no farther than the exact 20th.
    distances = hamming_distances(queries, CODES)
    recall = (np.take_along_axis(distances, positions, 1) <= -exact[:, -1:]).mean()
    assert recall >= 0.9
    full = BinaryIVFIndex(nprobe=10_000)
    full.add(CODES)
    assert np.array_equal(full.search(queries, 20)[0], exact)  # every cell probed = exact


def test_within_radius_equals_brute_force():
    index = BinaryFlatIndex()
    index.add(CODES)
    scores, positions = index.within(CODES[:1], 6)
    want = np.flatnonzero(hamming_distances(CODES[:1], CODES)[0] <= 6)
    assert sorted(positions.tolist()) == want.tolist()
    assert (np.diff(-scores) >= 0).all()  # nearest first


def test_factory_and_bad_codes():
    assert isinstance(make_index("auto", "hamming", 10), BinaryFlatIndex)
    assert isinstance(make_index("auto", "hamming", 2_000_000), BinaryIVFIndex)
    assert isinstance(make_index("ivf", "hamming", 10), BinaryIVFIndex)
    from retrieval.ann import PRUNED_SCAN_CODES

    for kind in ("flat", "auto"):
        assert isinstance(make_index(kind, "hamming", PRUNED_SCAN_CODES), BinaryPrunedIndex)
        assert type(make_index(kind, "hamming", PRUNED_SCAN_CODES - 1)) is BinaryFlatIndex
    with pytest.raises(InputError, match="float codes"):
        make_index("hnsw", "hamming", 10)
    with pytest.raises(InputError, match="packed uint8"):
        BinaryFlatIndex().add(np.zeros((3, 8), np.float32))
    with pytest.raises(InputError, match="Hamming"):
        BinaryFlatIndex("cosine")


# -- binary autoencoders ------------------------------------------------------------
DOCS = synthetic_docs(20)
TFIDF = TextVectorizer().fit_transform([t for _, t in DOCS])
LABELS = np.array([label for label, _ in DOCS])


@pytest.fixture(scope="module")
def text_binary():
    return TextAutoencoder(hidden=(32,), code_dim=16, epochs=4, batch_size=16, neighbours=3,
                           binarize="learned", binary_epochs=2).fit(TFIDF)


def test_learned_bits_contract_and_persistence(text_binary, tmp_path):
    for encoder in (text_binary, text_binary.derive("median", TFIDF)):
        codes = encoder.transform(TFIDF)
        assert encoder.binary and encoder.metric == "hamming" and encoder.dim == 16
        assert codes.dtype == np.uint8 and codes.shape == (len(DOCS), 2)
        encoder.save(tmp_path / encoder.binarize)
        assert np.array_equal(load_encoder(encoder.name, tmp_path / encoder.binarize).transform(TFIDF), codes)
    assert len(text_binary.history_["binary"]["loss"]) == 2


def test_median_bits_split_every_unit_in_half(text_binary):
    bits = np.unpackbits(text_binary.derive("median", TFIDF).transform(TFIDF), axis=1)
    assert np.allclose(bits.mean(axis=0), 0.5, atol=0.05)


def test_derived_float_codes_and_retrieval(text_binary):
    floats = text_binary.derive("none", TFIDF)
    codes = floats.transform(TFIDF)
    assert codes.dtype == np.float32 and codes.shape == (len(DOCS), 16) and not floats.binary
    # The learned bits retrieve the topic far above chance (0.25 for 4 topics).
    distances = hamming_distances(text_binary.transform(TFIDF), text_binary.transform(TFIDF))
    np.fill_diagonal(distances, 999)
    assert (LABELS[distances.argmin(axis=1)] == LABELS).mean() > 0.6


@pytest.mark.parametrize("bits", [12, 0, 2048])
def test_bits_must_be_multiples_of_8(bits):
    with pytest.raises(InputError, match="multiple of 8"):
        TextAutoencoder(hidden=(8,), code_dim=bits, epochs=1, binarize="learned").fit(TFIDF)
    with pytest.raises(InputError, match=f"got {bits}"):
        DocsConfig(bits=bits)


def test_conv_binary_autoencoder():
    images = np.random.default_rng(1).integers(0, 256, (48, 16, 16, 1), dtype=np.uint8)
    encoder = ConvAutoencoder(filters=(4, 8), code_dim=16, epochs=1, batch_size=16, binarize="learned",
                              binary_epochs=1).fit(images)
    assert encoder.transform(images).shape == (48, 2)
    assert encoder.derive("median", images).transform(images).dtype == np.uint8
    with pytest.raises(InputError, match="binarize"):
        ConvAutoencoder(binarize="maybe").fit(images)


def test_hashing_baselines_need_bits():
    with pytest.raises(InputError, match="--bits"):
        DocsConfig(baselines="lsa,itq")
    assert DocsConfig(bits=32).baselines == ("lsa", "tfidf", "itq", "lsh")
    assert DocsConfig().baselines == ("lsa", "tfidf")


# -- binary indexes end to end ---------------------------------------------------------
@pytest.fixture(scope="module")
def binary_docs(tmp_path_factory):
    base = tmp_path_factory.mktemp("binary_docs")
    write_corpus(base / "corpus", synthetic_docs())
    write_corpus(base / "queries", synthetic_docs(n_per_topic=5, seed=1), prefix="q")
    store = Store(base / "home")
    config = replace(TINY_DOCS, bits=16, binary_epochs=2, baselines=None)
    manifest = build_docs_index(base / "corpus", "hash", config, store=store)
    return store, manifest, base


def test_build_with_bits_has_every_method(binary_docs):
    _, manifest, _ = binary_docs
    methods = manifest["methods"]
    assert list(methods) == ["ae", "ae-float", "ae-median", "lsa", "tfidf", "itq", "lsh"]
    for name in ("ae", "ae-median", "itq", "lsh"):
        assert methods[name]["metric"] == "hamming" and methods[name]["index"] == "binary-flat"
        assert methods[name]["dim"] == 16
    assert methods["ae-float"]["metric"] == "cosine" and methods["ae"]["training"]["binary_epochs"] >= 1
    # 2 bytes of code per item (plus the FAISS header) against 64 for the 16 float dims.
    assert methods["ae"]["bytes_per_item"] < 3 < 64 <= methods["ae-float"]["bytes_per_item"]


def test_two_stage_with_whole_collection_equals_exact_scorer(binary_docs):
    store, manifest, _ = binary_docs
    retriever = Retriever("hash", store)
    n = manifest["counts"]["items"]
    X = retriever.query_inputs(["rocket orbit launch nasa", "engine brake tire dealer"])
    # Re-ranking a shortlist that holds every item is the exact scorer itself.
    for rerank, exact in (("tfidf", "tfidf"), ("float", "ae-float")):
        two, positions = retriever.rank(X, 20, "ae", rerank=rerank, shortlist=n)
        want, want_positions = retriever.rank(X, 20, exact)
        assert np.allclose(two, want, atol=1e-5)
        assert (positions == want_positions).mean() > 0.95  # exact ties may swap
    fused, positions = retriever.rank(X, 20, "ae", rerank="tfidf+float", shortlist=n)
    from retrieval.search import rerank as two_stage

    parts = [two_stage.scorer(p, X, stored=retriever.inputs, float_method=lambda: retriever.method("ae-float"))
             for p in ("tfidf", "float")]
    for qi in range(len(positions)):
        assert np.allclose(fused[qi], parts[0](qi, positions[qi]) + parts[1](qi, positions[qi]), atol=1e-5)
        assert (np.diff(fused[qi]) <= 1e-6).all()
    # Feedback: TF-IDF cosine against the query plus the nearest codes' TF-IDF centroid.
    from retrieval.search.rerank import PRF_DOCUMENTS, PRF_WEIGHT

    prf, positions = retriever.rank(X[:1], 20, "ae", rerank="tfidf-prf", shortlist=40)
    shortlist = two_stage.shortlist(retriever.method("ae")[1], retriever.method("ae")[0].transform(X[:1]), 40, None)[0]
    stored = retriever.inputs()
    expanded = X[0].toarray().ravel() + PRF_WEIGHT * np.asarray(stored[shortlist[:PRF_DOCUMENTS]].mean(axis=0)).ravel()
    assert np.allclose(prf[0], stored[positions[0]] @ expanded, atol=1e-5) and (np.diff(prf[0]) <= 1e-6).all()
    hits = retriever.search("rocket orbit launch nasa", 5, rerank="tfidf")
    assert [h.label for h in hits].count("space") >= 4
    assert hits == retriever.search_inputs(X[:1], 5, "ae>tfidf")[0]


def test_radius_shortlist_and_empty_ball(binary_docs):
    from retrieval.search import rerank as two_stage

    store, _, _ = binary_docs
    retriever = Retriever("hash", store)
    X = retriever.query_inputs(["rocket orbit launch nasa"])
    code = retriever.method("ae")[0].transform(X)
    _, positions = retriever.rank(X, 200, "ae", rerank="none", radius=3)
    index = retriever.method("ae")[1]
    within = set(index.within(code, 3)[1].tolist())
    assert set(positions[0][positions[0] >= 0].tolist()) == within
    # A radius no code reaches: the nearest codes, with a warning, never a silent empty answer.
    far = np.bitwise_not(code)
    distances = hamming_distances(far, index.index_.reconstruct_n(0, len(index)))
    if distances.min() > 0:
        with pytest.warns(RetrievalWarning, match="no item within Hamming radius 0"):
            shortlist = two_stage.shortlist(index, far, 10, radius=0)
        assert len(shortlist[0]) == 10


def test_evaluate_adds_two_stage_rows(binary_docs):
    store, _, base = binary_docs
    retriever = Retriever("hash", store)
    assert default_methods(retriever)[-4:] == ["ae>tfidf", "ae>tfidf-prf", "ae>float", "ae>tfidf+float"]
    report = evaluate_index(retriever, load_queries(retriever, base / "queries", labels_from_folders=True),
                            k=10, latency_samples=3)
    rows = report["methods"]
    assert {"ae", "ae-median", "itq", "lsh", "ae>tfidf", "ae>tfidf-prf", "ae>float", "ae>tfidf+float"} <= set(rows)
    assert rows["ae>tfidf"]["bytes_per_item"] > rows["ae"]["bytes_per_item"]  # it reads the TF-IDF rows
    assert rows["ae>tfidf+float"]["bytes_per_item"] > rows["ae>tfidf"]["bytes_per_item"]
    assert rows["tfidf"]["precision@10"] > 0.8 and rows["ae>tfidf"]["precision@10"] > 0.8


def test_rerank_errors(binary_docs, built_docs, tmp_path):
    store, _, base = binary_docs
    retriever = Retriever("hash", store)
    X = retriever.query_inputs(["rocket orbit"])
    with pytest.raises(InputError, match="does not apply to documents"):
        retriever.rank(X, 5, rerank="pixels")
    float_store, name, _ = built_docs
    with pytest.raises(InputError, match="need binary codes"):
        Retriever(name, float_store).search("rocket orbit", 5, rerank="tfidf")
    lean = replace(TINY_DOCS, bits=16, binary_epochs=1, baselines="none", keep_inputs=False, epochs=1)
    build_docs_index(base / "corpus", "lean", lean, store=store)
    with pytest.raises(InputError, match="without keeping its TF-IDF matrix.*--force"):
        Retriever("lean", store).search("rocket orbit", 5, rerank="tfidf")
    assert len(Retriever("lean", store).search("rocket orbit", 5, rerank="float")) == 5


def test_cli_bits(monkeypatch, capsys, binary_docs, docs_dir):
    store, _, _ = binary_docs
    code, out, err = run(monkeypatch, capsys, "query", "hash", "rocket orbit launch", "--rerank", "tfidf",
                         "--shortlist", "50", "-k", "3", "--json", "--index-dir", store.root)
    assert code == 0, err
    assert [h["label"] for h in json.loads(out)] == ["space"] * 3
    code, _, err = run(monkeypatch, capsys, "index", "docs", docs_dir, "--name", "x", "--bits", "60")
    assert code == 1 and "--bits must be a multiple of 8" in err and "got 60" in err
    code, _, err = run(monkeypatch, capsys, "query", "hash", "rocket", "--rerank", "bm25", "--index-dir", store.root)
    assert code == 2 and "bm25" in err  # not a re-ranker at all: a usage error
    code, _, err = run(monkeypatch, capsys, "query", "hash", "rocket", "--rerank", "pixels", "--index-dir", store.root)
    assert code == 1 and "--rerank 'pixels' does not apply to documents" in err


def test_image_index_with_bits(tmp_path):
    synthetic_images(tmp_path / "images")
    store = Store(tmp_path / "home")
    config = replace(TINY_IMAGES, bits=16, binary_epochs=1, baselines=None)
    manifest = build_images_index(tmp_path / "images", "pics", config, store=store)
    assert {"ae", "ae-float", "ae-median", "pca", "pixels", "itq", "lsh"} == set(manifest["methods"])
    retriever = Retriever("pics", store)
    query = sorted((tmp_path / "images" / "disc").iterdir())[0]
    n = manifest["counts"]["items"]
    hits = retriever.search(query, 5, rerank="pixels", shortlist=n)
    exact = retriever.search(query, 5, method="pixels")
    assert [h.position for h in hits] == [h.position for h in exact]
    assert "ae>pixels" in default_methods(retriever)


def test_plot_map_of_a_binary_index(binary_docs, tmp_path):
    """The 2-D map trains float codes: a --bits index once failed with '--bits must be a multiple of 8 ... got 2'."""
    from PIL import Image

    from retrieval import corpus_map

    store, _, _ = binary_docs
    out = corpus_map(Retriever("hash", store), tmp_path / "map.png", epochs=1, max_items=60)
    with Image.open(out) as img:
        assert img.width > img.height
