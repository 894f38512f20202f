"""Index segments (issue 13): add writes a segment, removals write marks, compaction merges, queries span them."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import FIRST_SEGMENT, TINY_DOCS, synthetic_docs, write_corpus

from retrieval import Store, build_docs_index
from retrieval.errors import IndexFormatError, RetrievalWarning
from retrieval.search import Retriever
from retrieval.storage import FORMAT_VERSION, read_raw_manifest, seal_index
from retrieval.writer import add_items, compact, compaction_plan, remove_items, sync_items

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
QUERIES = ["orbit rocket launch nasa", "engine brake tire dealer", "doctor vaccine therapy", "keyboard printer modem"]
#: flat floats + TF-IDF; learned bits in an IVF (binary IVF, float IVF, sparse); learned bits, exact scans;
#: graphs (searched segment by segment, the others are joined in memory).
CONFIGS = {"flat": replace(TINY_DOCS, index_kind="flat"), "hnsw": replace(TINY_DOCS, index_kind="hnsw"),
           "ivf-bits": replace(TINY_DOCS, index_kind="ivf", bits=8, binary_epochs=1),
           "flat-bits": replace(TINY_DOCS, index_kind="flat", bits=8, binary_epochs=1),
           # Exact pruned cells (BinaryPrunedIndex): what "flat" builds from PRUNED_SCAN_CODES codes on.
           "pruned-bits": replace(TINY_DOCS, index_kind="flat", bits=8, binary_epochs=1)}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("segments")
    write_corpus(root / "base", synthetic_docs(n_per_topic=50))  # IVF: 5 cells, every one probed
    write_corpus(root / "more1", synthetic_docs(n_per_topic=4, seed=5), prefix="a")
    write_corpus(root / "more2", synthetic_docs(n_per_topic=4, seed=6), prefix="b")
    return root


@pytest.fixture(scope="module")
def built(corpora, tmp_path_factory):
    """``copy(key, tmp_path) -> Store``: a private copy of the index of configuration ``key``, built once."""
    homes = {}

    def copy(key: str, tmp_path: Path) -> Store:
        if key not in homes:
            homes[key] = Store(tmp_path_factory.mktemp(f"home-{key}"))
            with pytest.warns(RetrievalWarning), pytest.MonkeyPatch.context() as patch:  # the tiny models' self-check
                if key == "pruned-bits":
                    from retrieval import ann

                    patch.setattr(ann, "PRUNED_SCAN_CODES", 1)
                build_docs_index(corpora / "base", "seg", CONFIGS[key], store=homes[key])
                kind = homes[key].read_manifest("seg")["methods"]["ae"]["index"]
                assert (kind == "binary-pruned") == (key == "pruned-bits"), kind
        store = Store(tmp_path / "home")
        shutil.copytree(homes[key].path("seg"), store.path("seg"))
        return store

    return copy


def _brute(index, encoder, inputs, metric: str, binary: bool):
    """Scores of every query against every stored code, computed without the index (higher better)."""
    stored = index.stored()
    if sp.issparse(stored):  # TF-IDF: cosine of the rows
        from retrieval.ann import SparseIndex

        return np.asarray((SparseIndex._normalize(encoder.transform(inputs)) @ stored.T).todense(), np.float32)
    queries = index._prepare(encoder.transform(inputs))
    if binary:
        bits = np.unpackbits(np.asarray(stored), axis=1).astype(np.int32)
        q = np.unpackbits(np.asarray(queries), axis=1).astype(np.int32)
        return -(q[:, None, :] != bits[None, :, :]).sum(axis=2).astype(np.float32)
    if metric == "l2":
        return -np.sqrt(((queries[:, None, :] - stored[None, :, :]) ** 2).sum(axis=2))
    return queries @ stored.T


def _check_against_brute_force(r: Retriever, k: int = 15) -> dict:
    """Every method's ranking is a brute-force ranking over the same live codes; returns the hits."""
    inputs = r.query_inputs(QUERIES)
    hits = {}
    for method in r.methods:
        encoder, index = r.method(method)
        info = r.manifest["methods"][method]
        assert len(index) == len(r.metadata)
        scores, positions = r.rank(inputs, k, method)
        brute = _brute(index, encoder, inputs, info["metric"], info["binary"])
        assert brute.shape[1] == len(r.metadata)
        for qi in range(len(QUERIES)):
            assert len(set(positions[qi])) == k and positions[qi].min() >= 0, method
            expected = np.sort(brute[qi])[::-1][:k]
            np.testing.assert_allclose(scores[qi], expected, atol=1e-4, err_msg=method)
            np.testing.assert_allclose(brute[qi][positions[qi]], scores[qi], atol=1e-4, err_msg=method)
        hits[method] = (scores, positions, [[row["id"] for row in r.metadata.rows(p)] for p in positions])
    return hits


@pytest.mark.parametrize("key", list(CONFIGS))
def test_segments_search_like_one_index_and_compaction_keeps_the_hits(built, corpora, tmp_path, key):
    store = built(key, tmp_path)
    add_items(store, "seg", corpora / "more1")
    report = add_items(store, "seg", corpora / "more2")
    assert (report.added, report.segments, report.items) == (16, 3, 232)
    gone = ["space/doc000.txt", "cars/doc060.txt", "space/a000.txt", "computers/b012.txt"]
    report = remove_items(store, "seg", ids=gone)
    assert (report.removed, report.items, report.segments) == (4, 228, 3)
    m = store.read_manifest("seg")
    assert [(s["items"], s["deleted"]) for s in m["segments"]] == [(200, 2), (16, 1), (16, 1)]
    assert m["counts"]["items"] == 228 and m["counts"]["labelled"] == 228 and m["counts"]["labels"] == 4
    long_lived = Retriever("seg", store)
    before = _check_against_brute_force(long_lived)
    ids = long_lived.metadata.ids()
    assert len(ids) == 228 and not set(gone) & set(ids)
    assert [row["id"] for row in long_lived.metadata.rows(range(228))] == ids  # positions are dense
    assert long_lived.metadata.position("computers/b013.txt") == ids.index("computers/b013.txt")
    liked = long_lived.like("space/b001.txt", 5, method="tfidf")
    assert "space/b001.txt" not in [h.id for h in liked] and liked[0].label == "space"
    if long_lived.manifest["methods"]["ae"]["binary"]:
        _check_radius(long_lived)
    assert [o["id"] for o in long_lived.outliers(228)] and long_lived.inputs().shape[0] == 228

    result = compact(store, "seg")
    assert (result.segments_before, result.segments, result.dropped, result.items) == (3, 1, 4, 228)
    after = _check_against_brute_force(long_lived)  # refreshed: the compacted index
    assert len(long_lived.manifest["segments"]) == 1
    with Retriever("seg", store) as fresh:  # saved and loaded: the same hits again
        reopened = _check_against_brute_force(fresh)
    for method in before:
        for got in (after[method], reopened[method]):
            np.testing.assert_allclose(got[0], before[method][0], atol=1e-5)
            assert _ranked(got) == _ranked(before[method]), method


def _ranked(hits) -> list:
    """Per query, the hits as a list of sets of equal score (the order among ties is the backend's),
    without the last set: which of the items tied at the cut-off make it is arbitrary too."""
    scores, _, ids = hits
    out = []
    for row_scores, row_ids in zip(np.round(scores, 4), ids):
        groups: dict = {}
        for score, item in zip(row_scores, row_ids):
            groups.setdefault(score, set()).add(item)
        out.append([groups[score] for score in sorted(groups, reverse=True)][:-1])
    return out


def _check_radius(r: Retriever) -> None:
    encoder, index = r.method("ae")
    code = encoder.transform(r.query_inputs(QUERIES[:1]))
    scores, positions = index.within(code, 2)
    brute = _brute(index, encoder, r.query_inputs(QUERIES[:1]), "hamming", True)[0]
    assert sorted(positions.tolist()) == sorted(np.flatnonzero(brute >= -2).tolist())
    assert np.all(np.diff(scores) <= 0)


def _stats(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in folder.rglob("*") if p.is_file()}


def test_add_and_remove_leave_every_existing_file_alone(built, corpora, tmp_path):
    store = built("flat", tmp_path)
    folder = store.path("seg")
    before = _stats(folder)
    add_items(store, "seg", corpora / "more1")
    after = _stats(folder)
    changed = {rel for rel in before if after.get(rel) != before[rel]}
    assert changed == {"manifest.json"}  # nothing copied, nothing rewritten
    new = set(after) - set(before)
    assert new and all(rel.startswith("segments/g000002/") for rel in new)
    files = store.read_manifest("seg")["files"]
    assert new <= set(files) and files[f"{FIRST_SEGMENT}/items.sqlite"]["sha256"]  # old checksums carried over
    remove_items(store, "seg", ids=["space/doc001.txt"])
    final = _stats(folder)
    assert {rel for rel in after if final.get(rel) != after[rel]} == {"manifest.json"}
    assert set(final) - set(after) == {f"{FIRST_SEGMENT}/deleted-g000003.npy"}


def test_garbage_of_killed_writers_is_ignored_then_collected(built, tmp_path):
    store = built("flat", tmp_path)
    folder = store.path("seg")
    hits = [h.id for h in Retriever("seg", store).search(QUERIES[0], 5)]
    # What writers killed before their commit leave: a half-written segment, unlisted marks.
    (folder / "segments" / "g000002" / "methods" / "ae").mkdir(parents=True)
    (folder / "segments" / "g000002" / "items.sqlite").write_bytes(b"half written")
    (folder / FIRST_SEGMENT / "deleted-g000002.npy").write_bytes(b"never committed")
    (folder / "manifest.json.tmp").write_text('{"half": ')  # killed while writing the manifest (kill test)
    with Retriever("seg", store) as r:  # nothing unlisted is read, so nothing of it matters
        assert [h.id for h in r.search(QUERIES[0], 5)] == hits
    with store.lock("seg"):  # the next writer deletes it
        pass
    assert not (folder / "segments" / "g000002").exists()
    assert not (folder / FIRST_SEGMENT / "deleted-g000002.npy").exists()
    assert not (folder / "manifest.json.tmp").exists()
    # A listed segment file is verified as before.
    data = bytearray((folder / FIRST_SEGMENT / "novelty.npy").read_bytes())
    data[-1] ^= 0xFF
    (folder / FIRST_SEGMENT / "novelty.npy").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=f"{FIRST_SEGMENT}/novelty.npy was modified"):
        Retriever("seg", store)
    # So is a file injected among the shared model files.
    (folder / FIRST_SEGMENT / "novelty.npy").write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))
    (folder / "vectorizer" / "extra.json").write_text("{}")
    with pytest.raises(IndexFormatError, match="unexpected file vectorizer/extra.json"):
        Retriever("seg", store)


def test_a_reader_outlives_a_compaction_until_the_next_write(built, corpora, tmp_path):
    store = built("flat", tmp_path)
    add_items(store, "seg", corpora / "more1")
    reader = Retriever("seg", store)
    ids = reader.metadata.ids()
    compact(store, "seg")
    old = store.path("seg") / "segments" / "g000002"
    assert old.exists()  # no longer listed, kept for readers of the previous manifest
    assert reader.metadata.ids() == ids and reader.metadata.rows([len(ids) - 1])[0]["id"] == ids[-1]
    remove_items(store, "seg", ids=[ids[0]])  # the next write collects it
    assert not old.exists()
    hits = reader.search(QUERIES[0], 300)  # reopened: the new version
    assert len(hits) == len(ids) - 1 and ids[0] not in {h.id for h in hits}


def test_automatic_compaction(built, corpora, tmp_path, monkeypatch):
    import retrieval.writer as writer

    store = built("flat", tmp_path)
    monkeypatch.setattr(writer, "COMPACT_TIER_SEGMENTS", 3)
    write_corpus(tmp_path / "c", synthetic_docs(n_per_topic=1, seed=9), prefix="c")
    reports = []
    for round_ in range(3):
        for path in (tmp_path / "c").rglob("*.txt"):
            path.rename(path.with_name(f"r{round_}-{path.name}"))  # new ids each round
        reports.append(add_items(store, "seg", tmp_path / "c"))
    assert [(r.segments, r.compacted) for r in reports] == [(2, 0), (3, 0), (2, 3)]
    sizes = [s["items"] for s in store.read_manifest("seg")["segments"]]
    assert sizes == [200, 12]  # the three 4-item segments merged; the build's segment untouched
    # Removing more than a quarter of a segment rewrites it without them.
    report = remove_items(store, "seg", ids=["cars/r0-c001.txt"], path_prefix="space/r")  # 4 of 12
    assert report.compacted == 1 and report.items == 208
    assert [(s["items"], s["deleted"]) for s in store.read_manifest("seg")["segments"]] == [(200, 0), (8, 0)]
    with Retriever("seg", store) as r:
        _check_against_brute_force(r)


def test_compaction_plan():
    def seg(items, deleted=0):
        return {"items": items, "deleted": deleted}

    assert compaction_plan([seg(100)] * 3) == []
    assert compaction_plan([seg(100)] * 4) == [0, 1, 2, 3]
    assert compaction_plan([seg(10**6)] + [seg(10)] * 3 + [seg(100)] * 3) == []  # 3 per tier at most
    assert compaction_plan([seg(10**6), seg(1000), seg(9999), seg(5000), seg(2000)]) == [1, 2, 3, 4]
    assert compaction_plan([seg(500)] * 4 + [seg(10)] * 4) == [4, 5, 6, 7]  # the smallest full tier first
    assert compaction_plan([seg(100), seg(10, deleted=3)]) == [1]  # 30 % removed: rewritten alone
    assert compaction_plan([seg(100, deleted=25), seg(10)]) == []  # 25 % is not more than 25 %
    assert compaction_plan([seg(10, deleted=10)]) == [0]  # everything removed: dropped


def _as_format_2(folder: Path) -> None:
    """Rewrite a one-segment index as retrieval 0.2 wrote it: per-item files at the top, no templates."""
    seg = folder / FIRST_SEGMENT
    for path in sorted(seg.rglob("*")):
        if path.is_file():
            target = folder / path.relative_to(seg)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    shutil.rmtree(folder / "segments")
    for template in folder.glob("methods/*/template.*"):
        template.unlink()
    m = json.loads((folder / "manifest.json").read_text())
    for key in ("segments", "generation", "files", "checksum"):
        m.pop(key, None)
    m["format_version"] = 2
    seal_index(folder, m)


@pytest.mark.parametrize("key", ["flat", "ivf-bits"])
def test_format_2_index_is_one_segment_until_compacted(built, corpora, tmp_path, key):
    store = built(key, tmp_path)
    folder = store.path("seg")
    expected = _check_against_brute_force(Retriever("seg", store))
    _as_format_2(folder)
    assert read_raw_manifest(folder)["format_version"] == 2
    with Retriever("seg", store) as r:
        assert [s["name"] for s in r.manifest["segments"]] == ["."]
        got = _check_against_brute_force(r)
    for method in expected:  # read in place: the same hits
        assert _ranked(got[method]) == _ranked(expected[method])
    add_items(store, "seg", corpora / "more1")  # IVF: the cells come from the format-2 index
    remove_items(store, "seg", ids=["space/doc002.txt"])
    raw = read_raw_manifest(folder)
    assert raw["format_version"] == FORMAT_VERSION
    assert [(s["name"], s["deleted"]) for s in raw["segments"]] == [(".", 1), ("g000001", 0)]
    assert (folder / "deleted-g000002.npy").exists() and (folder / "items.sqlite").exists()
    with Retriever("seg", store) as r:
        before = _check_against_brute_force(r)
    compact(store, "seg")
    with store.lock("seg"):  # the next writer collects the format-2 files
        pass
    left = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert not {"items.sqlite", "inputs.npz", "novelty.npy", "oov.npy", "deleted-g000002.npy",
                "methods/ae/index.faiss", "methods/ae/index.faissb"} & left
    assert "vectorizer/idf.npy" in left and "novelty_reference.npy" in left
    with Retriever("seg", store) as r:
        assert [s["name"] for s in r.manifest["segments"]] == ["g000003"]
        after = _check_against_brute_force(r)
    for method in before:
        assert _ranked(after[method]) == _ranked(before[method])


def test_sync_and_emptying_an_index(built, corpora, tmp_path):
    store = built("flat", tmp_path)
    add_items(store, "seg", corpora / "more1")
    report = sync_items(store, "seg", tmp_path / "nothing", allow_empty=True, new_source=True)
    assert (report.removed, report.items, report.segments) == (216, 0, 0)  # every segment dropped
    with Retriever("seg", store) as r:
        assert r.search(QUERIES[0], 5) == [] and len(r.metadata) == 0
    report = add_items(store, "seg", corpora / "more2")
    assert (report.added, report.items, report.segments) == (16, 16, 1)
    with Retriever("seg", store) as r:
        assert r.search(QUERIES[0], 3, "tfidf")[0].label == "space"


@pytest.mark.parametrize("kind, metric", [("flat", "cosine"), ("ivf", "l2"), ("hnsw", "cosine"), ("flat", "hamming"),
                                          ("ivf", "hamming"), ("pruned", "hamming"), ("sparse", "cosine")])
def test_every_backend_searches_without_removed_rows(kind, metric):
    from retrieval.ann import BinaryPrunedIndex, Deletions, make_index

    rng = np.random.default_rng(0)
    if metric == "hamming":
        codes = rng.integers(0, 256, (300, 8), dtype=np.uint8)
    elif kind == "sparse":
        codes = sp.random(300, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
    else:
        codes = rng.normal(size=(300, 8)).astype(np.float32)
    if kind == "pruned":
        index = BinaryPrunedIndex(metric, nlist=8)
    else:
        index = make_index("flat" if kind == "sparse" else kind, metric, 300, sparse=kind == "sparse")
    index.add(codes)
    removed = np.sort(rng.choice(300, 120, replace=False))
    queries = codes[:5]
    scores, positions = index.search_live(queries, 10, Deletions(removed, 300))
    full_scores, full_positions = index.search(queries, 300)
    for qi in range(5):
        assert not set(positions[qi]) & set(removed) and (positions[qi] >= 0).all()
        kept = ~np.isin(full_positions[qi], removed)
        np.testing.assert_allclose(scores[qi], full_scores[qi][kept][:10], atol=1e-5)  # the best 10 kept
