"""Streaming, memory-bounded builds: chunked reading, the streamed vocabulary, the training sample, sharded inputs."""
from __future__ import annotations

import dataclasses
import gzip
import shutil
import tarfile

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import TINY_DOCS, synthetic_docs, write_corpus
from retrieval import Store
from retrieval.config import DocsConfig
from retrieval.errors import InputError
from retrieval.modality import DOCS, IMAGES
from retrieval.search.retriever import Retriever
from retrieval.sources.documents import iter_documents, read_documents
from retrieval.storage import IndexFolder, read_manifest, read_raw_manifest
from retrieval.vectorize import TermCounts, TextVectorizer
from retrieval.writer import add_items, build_index, compact, remove_items, retrain


def _texts() -> list[str]:
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)]  # many terms of equal totals: the vocabulary cap cuts through ties
    texts = [text for _, text in synthetic_docs(n_per_topic=10)]
    texts += [" ".join(rng.choice(words, 15)) for _ in range(60)]
    return texts + ["the and of it", "Zebra ZEBRA quark 12 345 x"]


@pytest.mark.parametrize("cap", [7, 120, None])
def test_streamed_vocabulary_and_idf_equal_the_batch_fit(cap):
    texts = _texts()
    batch = TextVectorizer(max_features=cap)
    X = batch.fit_transform(texts)
    counts = TermCounts()
    for start in range(0, len(texts), 17):
        counts.update(texts[start:start + 17])
    streamed = TextVectorizer(max_features=cap).fit_counts(counts)
    assert streamed.vocabulary_ == batch.vocabulary_
    assert np.array_equal(streamed.idf_, batch.idf_)
    rows, oov = streamed.transform_oov(texts)
    assert abs(rows - X).max() < 1e-6
    assert np.array_equal(oov, batch.oov_fraction(texts))


@pytest.mark.parametrize("cap", [7, None])
def test_counted_chunks_weigh_as_the_texts_tokenised_again(cap):
    texts = _texts() + ["", "the", "unseenword unseenword other"]
    counts = TermCounts()
    chunks = [counts.count(texts[start:start + 13]) for start in range(0, len(texts), 13)]
    assert counts.documents == len(texts)
    vec = TextVectorizer(max_features=cap).fit_counts(counts)
    columns = vec.columns_of(counts)
    for start, chunk in zip(range(0, len(texts), 13), chunks):
        rows, oov = vec.transform_counts(chunk, columns)
        want, want_oov = vec.transform_oov(texts[start:start + 13])
        assert rows.shape == want.shape
        assert np.array_equal(rows.indptr, want.indptr) and np.array_equal(rows.indices, want.indices)
        assert np.array_equal(rows.data, want.data)
        assert np.array_equal(oov, want_oov)


def test_streamed_vocabulary_of_stop_words_only_is_refused():
    counts = TermCounts()
    counts.update(["the and of", "it is"])
    with pytest.raises(InputError, match="empty vocabulary"):
        TextVectorizer().fit_counts(counts)


def test_chunks_read_what_the_reader_reads(tmp_path):
    root = tmp_path / "c"
    write_corpus(root / "top", synthetic_docs(n_per_topic=5))
    (root / "top" / "space" / "blank.txt").write_text("  \n")
    (root / "top" / "cars" / "bin.txt").write_bytes(b"abc\x00def")
    archive = tmp_path / "c.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "top", arcname="top")
    for source in (root, archive):
        whole = read_documents(source, labels_from_folders=True)
        with pytest.warns(Warning) as caught:
            chunks = list(iter_documents(source, labels_from_folders=True, chunk_size=6))
        assert [len(c.items) for c in chunks[:-1]] == [6] * (len(chunks) - 1)
        assert [(it.id, it.text, it.label) for c in chunks for it in c.items] == \
               [(it.id, it.text, it.label) for it in whole.items]
        assert [s for c in chunks for s in c.skipped] == whole.skipped
        assert len([w for w in caught if "skipped" in str(w.message)]) == 2
    with pytest.raises(InputError, match="no sub-folders"):
        list(iter_documents(root / "top" / "space", labels_from_folders=True))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """Three builds of one corpus: in one chunk, in chunks of 25, and in chunks fitted on a sample of 40 (IVF)."""
    base = tmp_path_factory.mktemp("streamed")
    write_corpus(base / "corpus", synthetic_docs())
    store = Store(base / "home")
    everything = dataclasses.replace(TINY_DOCS, train_sample=0)
    build_index(DOCS, base / "corpus", "whole", everything, store=store, chunk_size=10_000)
    build_index(DOCS, base / "corpus", "chunked", everything, store=store, chunk_size=25)
    sampled = dataclasses.replace(TINY_DOCS, train_sample=40, keep_inputs=False, index_kind="ivf")
    build_index(DOCS, base / "corpus", "sampled", sampled, store=store, chunk_size=25)
    return store, base / "corpus"


def _segment(store: Store, name: str, s: int = 0):
    """Segment ``s`` of index ``name``."""
    folder = IndexFolder(store.require(name))
    return folder.segment(read_manifest(folder.root)["segments"][s]["name"])


def _shard_rows(store: Store, name: str, s: int = 0) -> list[int]:
    """The rows of each shard of segment ``s``'s stored inputs; checks the manifest lists every shard."""
    seg, files = _segment(store, name, s), read_raw_manifest(store.path(name))["files"]
    shards = DOCS.input_shards(seg.inputs(DOCS))
    assert all(path.relative_to(store.path(name)).as_posix() in files for path in shards)
    return [inputs.shape[0] for inputs in DOCS.iter_shards(shards)]


def test_a_chunked_build_equals_a_build_in_one_chunk(streamed):
    store, _ = streamed
    whole, chunked = _segment(store, "whole"), _segment(store, "chunked")
    assert _shard_rows(store, "chunked") == [25, 25, 25, 25, 20]  # in the build's one segment, as read
    assert _shard_rows(store, "whole") == [120]
    assert abs(DOCS.load_inputs(whole.inputs(DOCS)) - DOCS.load_inputs(chunked.inputs(DOCS))).max() == 0
    assert np.array_equal(np.load(whole.oov), np.load(chunked.oov))
    with Retriever("whole", store) as a, Retriever("chunked", store) as b:
        assert a.manifest["training"] == b.manifest["training"] == {"items": 120, "of": 120}
        for method in ("ae", "lsa", "tfidf"):
            for query in ("rocket orbit launch", "doctor vaccine", "keyboard printer driver"):
                assert [h.id for h in a.search(query, k=10, method=method)] == \
                       [h.id for h in b.search(query, k=10, method=method)], (method, query)


def test_a_sample_trains_the_models_and_every_item_is_encoded(streamed):
    store, corpus = streamed
    folder = _segment(store, "sampled")
    with Retriever("sampled", store) as r:
        manifest = r.manifest
        assert manifest["training"] == {"items": 40, "of": 120}
        assert manifest["counts"]["items"] == 120
        assert manifest["novelty"]["reference_items"] == 40
        assert manifest["drift"]["trained_items"] == 120  # growth is measured against the collection
        assert all(len(r.method(m)[1]) == 120 for m in ("ae", "lsa", "tfidf"))
        # IVF cells are learnt from the sample for 120 items (min(4 sqrt(n), n / 39)), not from a first chunk of 25
        assert manifest["methods"]["ae"]["factory"] == "IVF3,Flat"
        assert r.search("rocket orbit launch", k=5, method="lsa")[0].label == "space"
    assert len(np.load(folder.novelty)) == 120
    assert not folder.inputs(DOCS).exists() and not (store.path("sampled") / ".spool").exists()  # --no-keep-inputs


def test_removals_and_compaction_carry_the_shards(streamed, tmp_path, monkeypatch):
    store, _ = streamed
    home = Store(tmp_path / "home")
    shutil.copytree(store.path("chunked"), home.path("chunked"))
    before = DOCS.load_inputs(_segment(home, "chunked").inputs(DOCS))
    with Retriever("chunked", home) as r:
        gone = [r.metadata.rows([p])[0]["id"] for p in (3, 30, 61, 119)]  # in four shards
    remove_items(home, "chunked", ids=gone)
    write_corpus(tmp_path / "more", synthetic_docs(n_per_topic=2, seed=5), prefix="new")
    add_items(home, "chunked", tmp_path / "more")
    kept = np.setdiff1d(np.arange(120), [3, 30, 61, 119])
    with Retriever("chunked", home) as r:
        stored = r.inputs()
        assert stored.shape[0] == 124 and abs(stored[:116] - before[kept]).max() == 0
    monkeypatch.setattr(DOCS, "chunk_size", 50)  # the merged segment's shards: 24 + 24 + 24, then 25 + 19 + 8
    compact(home, "chunked")
    assert _shard_rows(home, "chunked") == [72, 52]
    with Retriever("chunked", home) as r:
        assert len(r.manifest["segments"]) == 1 and abs(r.inputs() - stored).max() == 0


def test_a_format_2_index_with_sharded_inputs_is_read_and_compacted(streamed, tmp_path):
    from test_segments import _as_format_2

    store, _ = streamed
    home = Store(tmp_path / "home")
    shutil.copytree(store.path("chunked"), home.path("chunked"))
    with Retriever("chunked", home) as r:
        expected = r.inputs()
    _as_format_2(home.path("chunked"))  # as the streaming builds of retrieval 0.2 wrote them: shards at the top
    assert (home.path("chunked") / "inputs.4.npz").exists()
    with Retriever("chunked", home) as r:
        assert r.manifest["segments"][0]["name"] == "." and abs(r.inputs() - expected).max() == 0
    remove_items(home, "chunked", ids=["space/doc002.txt"])
    compact(home, "chunked")
    with home.lock("chunked"):  # the next writer collects the format-2 files
        pass
    assert not list(home.path("chunked").glob("inputs*.npz"))
    with Retriever("chunked", home) as r:
        assert r.inputs().shape[0] == 119 and r.manifest["segments"][0]["name"] != "."


def test_a_retrain_reads_the_shards_one_at_a_time(streamed, monkeypatch):
    store, _ = streamed
    before = np.load(_segment(store, "chunked").novelty)
    inputs = DOCS.load_inputs(_segment(store, "chunked").inputs(DOCS))
    monkeypatch.setattr(DOCS, "chunk_size", 50)  # the new segment's inputs: the shards of 25 regrouped
    manifest = retrain(store, "chunked")
    folder = _segment(store, "chunked")
    assert manifest["training"] == {"items": 120, "of": 120} and manifest["counts"]["items"] == 120
    assert _shard_rows(store, "chunked") == [50, 50, 20]
    assert abs(DOCS.load_inputs(folder.inputs(DOCS)) - inputs).max() == 0
    assert np.allclose(np.load(folder.novelty), before, atol=1e-4)  # same inputs, same seed: the same models
    with Retriever("chunked", store) as r:
        assert all(len(r.method(m)[1]) == 120 for m in ("ae", "lsa", "tfidf"))


def test_an_addition_to_a_chunked_build_keeps_every_row(streamed, tmp_path):
    store, _ = streamed
    write_corpus(tmp_path / "more", synthetic_docs(n_per_topic=2, seed=5), prefix="new")
    add_items(store, "chunked", tmp_path / "more")
    assert _shard_rows(store, "chunked", 1) == [8]  # the 8 new rows: a segment of their own
    assert _shard_rows(store, "chunked", 0) == [50, 50, 20]  # untouched
    with Retriever("chunked", store) as r:
        inputs = r.inputs()
    assert inputs.shape[0] == 128
    text = next(it.text for it in read_documents(tmp_path / "more").items if it.id == "space/new000.txt")
    with Retriever("chunked", store) as r:
        assert r.manifest["counts"]["items"] == 128
        row = inputs[r.metadata.position("space/new000.txt")]
        assert abs(row - r.state.transform([text])).max() < 1e-6


@pytest.mark.parametrize("modality", [DOCS, IMAGES])
def test_sharded_inputs_round_trip(tmp_path, modality):
    rng = np.random.default_rng(0)
    if modality is DOCS:
        parts = [sp.random(n, 30, density=0.2, format="csr", dtype=np.float32, random_state=n) for n in (5, 0, 7, 3)]
        same = lambda a, b: a.shape == b.shape and abs(a - b).max() == 0 if a.shape[0] else a.shape == b.shape
    else:
        parts = [rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8) for n in (5, 0, 7, 3)]
        same = np.array_equal
    path = tmp_path / modality.inputs_file
    modality.save_inputs(path, parts[0])  # one file: what an index written before shards holds
    assert same(modality.load_inputs(path), parts[0])
    for part in parts[1:]:
        modality.append_inputs(path, part)
    assert len(modality.input_shards(path)) == 4
    whole = modality.concat_all(parts)
    assert same(modality.load_inputs(path), whole)
    assert [p.shape[0] for p in modality.iter_inputs(path)] == [5, 0, 7, 3]
    rows = np.array([0, 4, 5, 11, 14])
    assert same(modality.take_inputs(path, rows), whole[rows])
    modality.save_inputs(path, parts[2])  # a rewrite leaves one shard
    assert modality.input_shards(path) == [path] and same(modality.load_inputs(path), parts[2])


def test_train_sample_is_checked():
    with pytest.raises(InputError, match="--train-sample"):
        DocsConfig(train_sample=-1)
    assert DocsConfig(train_sample=0).train_sample == 0


def test_image_chunks_read_what_the_reader_reads(tmp_path):
    from conftest import synthetic_images
    from test_images import write_idx

    from retrieval.sources.images import iter_images, read_images

    rng = np.random.default_rng(1)
    idx = write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (23, 6, 6), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 23, dtype=np.uint8))
    folder = tmp_path / "pics"
    synthetic_images(folder, n_per_class=4)
    (folder / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    for source, options in ((idx, {}), (idx, {"size": 8, "limit": 20}), (folder, {"labels_from_folders": True})):
        whole = read_images(source, **options)
        chunks = list(iter_images(source, chunk_size=5, **options))
        assert [len(c) for c in chunks[:-1]] == [5] * (len(chunks) - 1)
        assert [(it.id, it.label, it.title) for c in chunks for it in c.items] == \
               [(it.id, it.label, it.title) for it in whole.items]
        assert np.array_equal(np.concatenate([c.pixels for c in chunks]), whole.pixels)
        assert {(c.size, c.color) for c in chunks} == {(whole.size, whole.color)}
        assert [s for c in chunks for s in c.skipped] == whole.skipped
    idx.with_name("cut-idx3").write_bytes(gzip.decompress(idx.read_bytes())[:-7])
    with pytest.raises(InputError, match="truncated"):
        list(iter_images(idx.with_name("cut-idx3"), chunk_size=5))
