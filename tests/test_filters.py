"""Filtered search (issue 14): filters resolved before the search equal a brute-force filter-then-rank."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

from conftest import TINY_DOCS, synthetic_docs, write_corpus

from retrieval import Index, Store, build_docs_index
from retrieval.ann import SegmentedIndex, best_of, make_index
from retrieval.errors import InputError, RetrievalWarning
from retrieval.search import Retriever
from retrieval.search.filters import Filter, NoMatchingItems

QUERIES = ["orbit rocket launch nasa", "engine brake tire dealer", "doctor vaccine therapy", "keyboard printer modem",
           "moon mission", "clutch fuel highway", "drug clinic surgery", "disk memory graphics", "people time year",
           "satellite telescope gravity dealer"]


# -- brute force, written without the code under test ------------------------------------------------
def brute_scores(stored, queries, metric: str) -> np.ndarray:
    """Every query against every stored row (higher better): cosine, minus L2, minus Hamming."""
    if sp.issparse(stored):
        q = sp.csr_matrix(queries, dtype=np.float64)
        q = sp.diags(1 / np.maximum(np.sqrt(np.asarray(q.multiply(q).sum(axis=1)).ravel()), 1e-30)) @ q
        return np.asarray((q @ stored.T).todense(), np.float64)  # stored rows are normalised
    if metric == "hamming":
        bits = np.unpackbits(np.asarray(stored), axis=1).astype(np.int32)
        q = np.unpackbits(np.asarray(queries), axis=1).astype(np.int32)
        return -(q[:, None, :] != bits[None, :, :]).sum(axis=2).astype(np.float64)
    stored = np.asarray(stored, np.float64)
    queries = np.asarray(queries, np.float64)
    if metric == "l2":
        return -np.sqrt(((queries[:, None, :] - stored[None, :, :]) ** 2).sum(axis=2))
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return queries @ stored.T  # stored rows are normalised for cosine


def assert_filter_then_rank(scores, positions, brute, allowed, k, atol=1e-4, what=""):
    """The hits are the best ``k`` of the allowed items by the brute-force scores (ties in any order)."""
    allowed = np.asarray(allowed)
    for qi in range(len(brute)):
        got = positions[qi][positions[qi] >= 0]
        expected = np.sort(brute[qi][allowed])[::-1][:k]
        assert len(got) == len(expected) == min(k, len(allowed)), what
        assert len(set(got.tolist())) == len(got) and np.isin(got, allowed).all(), what
        np.testing.assert_allclose(brute[qi][got], expected, atol=atol, err_msg=what)  # the right items
        np.testing.assert_allclose(scores[qi][:len(got)], expected, atol=atol, err_msg=what)  # scored right


# -- every backend, both paths (exact scoring of the rows; the index's search with a selector) ----------
def _codes(kind, metric, n, rng):
    if metric == "hamming":
        return rng.integers(0, 256, (n, 8), dtype=np.uint8)
    if kind == "sparse":
        return sp.random(n, 40, density=0.2, random_state=int(rng.integers(1000)), format="csr", dtype=np.float32)
    return rng.normal(size=(n, 8)).astype(np.float32) * (50 if metric == "l2" else 1)


def _index(kind, metric, n):
    from retrieval.ann import BinaryIVFIndex, BinaryPrunedIndex, IVFIndex

    if kind == "pruned":
        return BinaryPrunedIndex(metric, nlist=12)
    if kind == "ivf" and metric == "hamming":
        return BinaryIVFIndex(metric, nprobe=1000)  # every cell probed: exact
    if kind == "ivf":
        return IVFIndex(metric, nprobe=1000)
    return make_index("flat" if kind == "sparse" else kind, metric, n, sparse=kind == "sparse")


BACKENDS = [("flat", "cosine"), ("flat", "l2"), ("ivf", "cosine"), ("ivf", "l2"), ("hnsw", "cosine"),
            ("flat", "hamming"), ("ivf", "hamming"), ("pruned", "hamming"), ("sparse", "cosine")]


@pytest.mark.parametrize("kind, metric", BACKENDS)
@pytest.mark.parametrize("exact_items", [0, 10_000], ids=["selector", "exact"])
def test_backend_search_rows_is_brute_force_filter_then_rank(kind, metric, exact_items):
    # A stable seed: hash() of strings changes with every process (PYTHONHASHSEED), so a failure could not be rerun.
    rng = np.random.default_rng(int(hashlib.sha256(f"{kind} {metric}".encode()).hexdigest()[:8], 16))
    codes = _codes(kind, metric, 600, rng)
    index = _index(kind, metric, 600)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # HNSW inserts on parallel threads build a different graph every run
    try:
        index.add(codes)
    finally:
        faiss.omp_set_num_threads(threads)
    stored = index.stored()
    queries = codes[rng.choice(600, 12, replace=False)]
    brute = brute_scores(stored, queries, metric)
    for size in (1, 7, 60, 400):
        allowed = np.sort(rng.choice(600, size, replace=False))
        scores, rows = index.search_rows(queries, 10, allowed, exact_items=exact_items)
        assert scores.shape == rows.shape == (12, min(10, size))
        assert_filter_then_rank(scores, rows, brute, allowed, 10, what=f"{kind} {metric} {size}")


def test_best_of_breaks_ties_by_smaller_id():
    scores = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]], np.float32)
    ids = np.array([10, 40, 20, 30, 50])
    s, i = best_of(scores, ids, 2)
    assert i.tolist() == [[20, 30]] and s.tolist() == [[3.0, 3.0]]
    s, i = best_of(scores, ids, 9)
    assert i.tolist() == [[20, 30, 40, 10, 50]]


@pytest.mark.parametrize("kind, metric", [("flat", "cosine"), ("hnsw", "l2"), ("flat", "hamming"),
                                          ("ivf", "hamming"), ("sparse", "cosine")])
def test_segmented_index_filters_across_segments_without_removed_rows(kind, metric):
    """Three segments with removed rows: a filter over positions ranks as brute force over the live rows."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    sizes, parts, blocks = [300, 120, 80], [], []
    template = None
    for n in sizes:
        codes = _codes(kind, metric, n, rng)
        index = _index(kind, metric, n) if template is None else template.template()
        index.add(codes)
        template = template or index
        parts.append(index)
        # As stored (normalised for cosine), without index.stored(): an IVF index given a
        # direct map cannot be joined to the others any more.
        blocks.append(index._normalize(codes) if kind == "sparse" else index._prepare(codes))
    deleted = [np.sort(rng.choice(n, n // 5, replace=False)) for n in sizes]
    live = [np.setdiff1d(np.arange(n), d) for n, d in zip(sizes, deleted)]
    stored = sp.vstack([b[r] for b, r in zip(blocks, live)]).tocsr() if kind == "sparse" else \
        np.concatenate([b[r] for b, r in zip(blocks, live)])
    segments = SimpleNamespace(deleted=deleted, sizes=np.array(sizes))
    search = {"nprobe": 1000} if kind == "ivf" else None
    merged = SegmentedIndex(parts, segments, parts[0].kind, metric, search)
    assert len(merged) == stored.shape[0]
    queries = _codes(kind, metric, 12, rng)
    brute = brute_scores(stored, queries, metric)
    for exact_items in (0, 10_000):
        for size in (3, 50, 300):
            allowed = np.sort(rng.choice(len(merged), size, replace=False))
            scores, positions = merged.search_rows(queries, 8, allowed, exact_items=exact_items)
            assert_filter_then_rank(scores, positions, brute, allowed, 8, what=f"{kind} {exact_items} {size}")


# -- the Filter object ------------------------------------------------------------------------------
def test_filter_make_checks_its_arguments():
    assert Filter.make() is None
    f = Filter.make(label=["a", "b", "a"], path_prefix="/x", where=" length > :n ", params=["n=5"])
    assert f.labels == ("a", "b") and f.path_prefixes == ("/x",) and f.where == "length > :n"
    assert f.params == (("n", "5"),) and "label 'a' or 'b'" in f.describe()
    assert Filter.make(where="title = :t", params={"t": "x=y"}).params == (("t", "x=y"),)
    bad = [dict(label=""), dict(label=[3]), dict(where="  "), dict(params=["n=1"]),
           dict(where="length > :n", params=["n"]), dict(where="length > :n", params=["1n=2"]),
           dict(where="length > :n", params={"n": [1]}), dict(where="length > 1", params={"n": 1}),
           dict(where="x" * 3000), dict(where="label = 'a'; DROP TABLE items")]
    for kwargs in bad:
        with pytest.raises(InputError):
            Filter.make(**kwargs)
    with pytest.raises(InputError, match="is not used by --where"):
        Filter.make(where="length > :n", params={"m": 1, "n": 2})


# -- an index: every method, the item table, segments ------------------------------------------------
@pytest.fixture(scope="module")
def home(built_docs, tmp_path_factory):
    """A copy of the tiny document index, grown by one segment and with items removed (two segments)."""
    from retrieval.writer import add_items, remove_items

    store, name, _ = built_docs
    base = tmp_path_factory.mktemp("filters")
    mine = Store(base / "home")
    shutil.copytree(store.path(name), mine.path("f"))
    more = base / "more"
    write_corpus(more, synthetic_docs(n_per_topic=5, seed=3), prefix="m")
    add_items(mine, "f", more)
    remove_items(mine, "f", ids=["space/doc000.txt", "cars/doc031.txt", "space/m001.txt"])
    assert len(mine.read_manifest("f")["segments"]) == 2
    return mine


@pytest.fixture(scope="module")
def retriever(home):
    with Retriever("f", home) as r:
        yield r


def _rows(r: Retriever) -> list[dict]:
    return r.metadata.rows()


FILTERS = [  # (filter, the same rule in Python over a metadata row)
    (Filter.make(label="space"), lambda row: row["label"] == "space"),
    (Filter.make(label=["cars", "medicine"]), lambda row: row["label"] in ("cars", "medicine")),
    (Filter.make(where="id LIKE :p", params={"p": "%/m%"}), lambda row: "/m" in row["id"]),
    (Filter.make(label="computers", where="length > :n", params={"n": 290}),
     lambda row: row["label"] == "computers" and row["length"] > 290),
    (Filter.make(where="title LIKE 'space document 1%' OR label = 'cars'"),
     lambda row: row["title"].startswith("space document 1") or row["label"] == "cars"),
]


def test_every_method_equals_brute_force_filter_then_rank_over_two_segments(retriever):
    r = retriever
    rows = _rows(r)
    inputs = r.query_inputs(QUERIES)
    for method in r.methods:
        encoder, index = r.method(method)
        info = r.manifest["methods"][method]
        brute = brute_scores(index.stored(), encoder.transform(inputs), info["metric"])
        for flt, rule in FILTERS:
            allowed = np.array([row["position"] for row in rows if rule(row)])
            assert 0 < len(allowed) < len(rows)
            np.testing.assert_array_equal(r.allowed(flt), allowed)
            for k in (1, 5, 40):
                scores, positions = r.rank(inputs, k, method, filter=flt)
                assert_filter_then_rank(scores, positions, brute, allowed, k, what=f"{method} {flt.describe()}")


def test_path_prefix_and_hits(home):
    idx = Index.open("f", home)
    paths = sorted({row["path"] for row in idx.retriever.metadata.rows()})
    prefix = "medicine/"  # paths are relative to the source folder
    hits = idx.search("doctor vaccine", k=50, path_prefix=prefix, method="tfidf")
    assert hits and all(h.path.startswith(prefix) for h in hits) and all(h.label == "medicine" for h in hits)
    assert len(hits) == sum(p.startswith(prefix) for p in paths)  # every matching item is reachable
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    both = idx.search("doctor vaccine", k=50, path_prefix=[prefix, prefix.replace("medicine", "cars")])
    assert {h.label for h in both} == {"medicine", "cars"}


def test_filters_keep_the_results_that_post_filtering_loses(home):
    """The motivation: the top-k unfiltered then filtered is short; filtered first, it is full."""
    idx = Index.open("f", home)
    top = idx.search("orbit rocket launch nasa", k=10, method="tfidf")
    after = [h for h in top if h.label == "cars"]
    before = idx.search("orbit rocket launch nasa", k=10, method="tfidf", label="cars")
    assert len(after) < 10 and len(before) == 10 and all(h.label == "cars" for h in before)


def test_like_with_a_filter_leaves_the_item_out(home):
    idx = Index.open("f", home)
    hits = idx.like("space/doc001.txt", k=5, label="space", method="lsa")
    assert len(hits) == 5 and "space/doc001.txt" not in [h.id for h in hits]
    assert all(h.label == "space" for h in hits)


def test_no_matching_item_says_so(retriever):
    with pytest.raises(NoMatchingItems, match="no label 'planets'.*its labels: cars, computers"):
        retriever.search("orbit", 5, filter=Filter.make(label="planets"))
    with pytest.raises(NoMatchingItems, match="no item of index 'f' matches the filter"):
        retriever.search("orbit", 5, filter=Filter.make(label="space", where="length < 0"))
    with pytest.raises(NoMatchingItems):  # a removed item is not kept either
        retriever.search("orbit", 5, filter=Filter.make(where="id = 'space/doc000.txt'"))


@pytest.mark.parametrize("where, fragment", [
    ("lable = 'space'", "no such column: lable"),
    ("label = ", "not a valid condition"),
    ("label = :missing", "needs a parameter"),
    ("(SELECT count(*) FROM sqlite_master) > 0", "is refused"),
    ("pos IN (SELECT rowid FROM sqlite_schema)", "is refused"),
    ("(SELECT count(*) FROM pragma_table_info('items')) > 0", "is refused"),
    ("load_extension('/tmp/evil.so') IS NULL", "is refused"),
    ("(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c) > 0", "is refused"),
    ("1) UNION SELECT name FROM sqlite_master WHERE (1", "is refused|not a valid condition|closes a parenthesis"),
    ("length(zeroblob(100000000)) > 0", "not a valid condition.*too big"),
])
def test_bad_and_hostile_conditions_are_refused(retriever, where, fragment):
    with pytest.raises(InputError, match=fragment) as info:
        retriever.allowed(Filter.make(where=where))
    assert "--where" in str(info.value)


@pytest.mark.parametrize("where", ["1=1; DROP TABLE items", "label = 'x'; ATTACH DATABASE '/tmp/x' AS x",
                                   "1; PRAGMA writable_schema = 1", "1; DELETE FROM items",
                                   "1; UPDATE items SET label = 'x'"])
def test_statements_are_refused_and_nothing_changes(home, where):
    folder = home.path("f")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.sqlite")}
    with pytest.raises(InputError, match="holds ';'"):
        Index.open("f", home).search("orbit", where=where)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.sqlite")} == before


def test_the_filter_connection_cannot_write(retriever):
    """Even a statement that slipped past the checks could not write: read-only, query_only, authorizer."""
    import sqlite3

    con = retriever.metadata.table(0)._guarded()
    for statement in ("DELETE FROM items", "CREATE TABLE t (x)", "PRAGMA query_only = OFF",
                      "ATTACH DATABASE ':memory:' AS m", "SELECT * FROM sqlite_master"):
        with pytest.raises(sqlite3.DatabaseError):
            con.execute(statement)


def test_a_slow_condition_is_stopped(retriever, monkeypatch):
    import retrieval.search.filters as filters

    monkeypatch.setattr(filters, "FILTER_WHERE_SECONDS", 0.001)
    slow = "(SELECT count(*) FROM items a, items b, items c) > 0"
    with pytest.raises(InputError, match="ran longer than"):
        retriever.allowed(Filter.make(where=slow))


def test_resolved_filters_are_cached_until_the_index_changes(home, tmp_path):
    from retrieval.writer import remove_items

    store = Store(tmp_path / "home")
    shutil.copytree(home.path("f"), store.path("f"))
    with Retriever("f", store) as r:
        flt = Filter.make(path_prefix="space/", where="label = :l", params={"l": "space"})
        first = r.allowed(flt)
        assert r.allowed(flt) is first  # cached
        gone = r.metadata.rows([int(first[0])])[0]["id"]
        remove_items(store, "f", ids=[gone])
        again = r.allowed(flt)  # the retriever reopened the new version
        assert len(again) == len(first) - 1 and gone not in [row["id"] for row in r.metadata.rows(again)]


# -- a new filter reads the item tables' indexes on label and path (issue 14, item 5) ------------------
def test_prefix_end_bounds_exactly_the_strings_with_the_prefix():
    from retrieval.storage.metadata import prefix_end

    assert prefix_end("a/b") == "a/c" and prefix_end("a\U0010ffff") == "b" and prefix_end("\U0010ffff") is None
    assert prefix_end("x\ud7ff") == "x\ue000"  # the surrogates, which UTF-8 cannot hold, are skipped
    words = ["", "a", "a/", "a/b", "a/b/c", "a/b\U0010ffffz", "a/b\uffff", "a/c", "a/bz", "a0", "A/b", "b",
             "a\U0010ffff", "a\U0010ffffb", "\U0010ffff", "\U0010ffff\U0010ffff", "x\ud7ff1", "x\ue000"]
    for prefix in ["a", "a/", "a/b", "a\U0010ffff", "\U0010ffff", "x\ud7ff", "b"]:
        end = prefix_end(prefix)
        for w in words:  # Python orders str by code point, as SQLite orders UTF-8 text
            assert (prefix <= w and (end is None or w < end)) == w.startswith(prefix), (prefix, w)


PATHS = ["a/b/1.txt", "a/b", "a/bz/2.txt", "a/c/3.txt", "a/b\U0010ffffz", "a/b\uffff", "A/b/4.txt", "a%b/5", "a_b/6",
         "", None, "b/7.txt", "\U0010ffff/8", "é/9"]


def _table(path, n=300):
    from retrieval.items import Item
    from retrieval.storage import metadata

    items = [Item(id=f"i{j}", label=None if j % 7 == 0 else f"L{j % 5}", path=PATHS[j % len(PATHS)] or "",
                  text="x" * j) for j in range(n)]
    metadata.write(path, items, [""] * n)
    return items


@pytest.mark.parametrize("labels, prefixes, where, rule", [
    (("L1",), (), None, None), (("L1", "L3", "nothing"), (), None, None), ((), ("a/b",), None, None),
    ((), ("a/", "b/"), None, None), ((), ("a/b\U0010ffff",), None, None), ((), ("\U0010ffff",), None, None),
    ((), ("a%",), None, None), ((), ("é",), None, None),
    (("L2",), ("a/b",), "length > 100", lambda it: len(it.text) > 100),
    ((), (), "length % 3 = 0", lambda it: len(it.text) % 3 == 0),
    (("L4",), ("A",), "id LIKE 'i1%'", lambda it: it.id.startswith("i1")),
])
def test_filters_on_a_table_equal_python_with_or_without_its_indexes(tmp_path, labels, prefixes, where, rule):
    import sqlite3

    from retrieval.storage.metadata import Metadata

    items = _table(tmp_path / "items.sqlite")
    expected = [j for j, it in enumerate(items) if (not labels or it.label in labels)
                and (not prefixes or any(it.path.startswith(p) for p in prefixes)) and (rule is None or rule(it))]
    assert expected  # a filter that keeps nothing would test little
    table = Metadata(tmp_path / "items.sqlite")
    assert table.has_filter_indexes()
    np.testing.assert_array_equal(table.filtered(labels, prefixes, where), expected)
    table.close()
    shutil.copy(tmp_path / "items.sqlite", tmp_path / "old.sqlite")  # a table written before the indexes
    con = sqlite3.connect(tmp_path / "old.sqlite")
    con.executescript("DROP INDEX items_label; DROP INDEX items_path;")
    con.close()
    old = Metadata(tmp_path / "old.sqlite")
    assert not old.has_filter_indexes()
    np.testing.assert_array_equal(old.filtered(labels, prefixes, where), expected)
    old.close()


def test_a_label_or_path_filter_reads_its_index_not_every_row(tmp_path):
    import sqlite3

    from retrieval.storage.metadata import Metadata

    _table(tmp_path / "items.sqlite")
    table = Metadata(tmp_path / "items.sqlite")
    statements: list[str] = []
    table._guarded().set_trace_callback(statements.append)  # the statements as run, values filled in
    table.filtered(labels=["L1", "L2"])
    table.filtered(prefixes=["a/b", "b/"])
    table.filtered(labels=["L1"], where="length > 10")
    con = sqlite3.connect(tmp_path / "items.sqlite")
    plans = [" ".join(row[-1] for row in con.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in statements]
    con.close()
    table.close()
    assert len(plans) == 3, statements
    assert "INDEX items_label" in plans[0] and "SCAN" not in plans[0], plans
    assert "INDEX items_path" in plans[1] and "SCAN" not in plans[1], plans
    assert "INDEX items_label" in plans[2] and "SCAN" not in plans[2], plans


def test_a_where_cannot_escape_its_parentheses(retriever):
    with pytest.raises(InputError, match="closes a parenthesis it did not open"):
        Filter.make(label="space", where="1) OR (1")
    with pytest.raises(InputError, match="leaves one open"):
        Filter.make(where="(length > 1")
    space = retriever.allowed(Filter.make(label="space"))
    # Parentheses inside quotes and comments do not count; a trailing comment does not swallow the filter's own.
    for where in ["title != ')' AND (length > 0)", "length > 0 -- a comment ) (", "length > 0 /* ) */",
                  '"label" = \'space\'', "label != 'it''s )'"]:
        np.testing.assert_array_equal(retriever.allowed(Filter.make(label="space", where=where)), space)


def test_a_repeated_filter_is_not_resolved_again(retriever, monkeypatch):
    flt = Filter.make(label="cars", path_prefix="cars/")
    first = retriever.allowed(flt)
    monkeypatch.setattr(retriever.metadata, "filtered", lambda *a, **k: pytest.fail("resolved again"))
    assert retriever.allowed(Filter.make(label="cars", path_prefix="cars/")) is first


# -- a binary index: two-stage search within the filter --------------------------------------------
@pytest.fixture(scope="module")
def bits_home(tmp_path_factory):
    from dataclasses import replace

    base = tmp_path_factory.mktemp("filter-bits")
    write_corpus(base / "corpus", synthetic_docs(n_per_topic=20))
    store = Store(base / "home")
    with pytest.warns(RetrievalWarning):  # the tiny models' self-check
        build_docs_index(base / "corpus", "b", replace(TINY_DOCS, bits=8, binary_epochs=1, epochs=2), store=store)
    return store


@pytest.mark.parametrize("rerank, radius", [(None, None), ("tfidf", None), ("float", None), ("none", 2)])
def test_binary_codes_and_two_stage_search_stay_inside_the_filter(bits_home, rerank, radius):
    with Retriever("b", bits_home) as r:
        flt = Filter.make(label="medicine")
        allowed = r.allowed(flt)
        inputs = r.query_inputs(QUERIES)
        if rerank is None and radius is None:
            encoder, index = r.method("ae")
            brute = brute_scores(index.stored(), encoder.transform(inputs), "hamming")
            scores, positions = r.rank(inputs, 7, "ae", filter=flt)
            assert_filter_then_rank(scores, positions, brute, allowed, 7, what="bits")
            return
        scores, positions = r.rank(inputs, 7, "ae", rerank=rerank, radius=radius, shortlist=12, filter=flt)
        found = positions[positions >= 0]  # a radius may hold fewer than k items
        assert len(found) and np.isin(found, allowed).all()
        if radius is None:
            assert (positions >= 0).all()
        if rerank == "tfidf":  # the shortlist is the 12 nearest codes of the filter, re-scored by TF-IDF
            encoder, index = r.method("ae")
            brute = brute_scores(index.stored(), encoder.transform(inputs), "hamming")
            tfidf = brute_scores(r.inputs(), inputs, "cosine")
            for qi in range(len(QUERIES)):
                cutoff = np.sort(brute[qi][allowed])[::-1][11]
                assert (brute[qi][positions[qi]] >= cutoff).all()
                np.testing.assert_allclose(scores[qi], tfidf[qi][positions[qi]], atol=1e-4)


# -- images: the autoencoder, PCA and raw pixels ------------------------------------------------------
def test_image_methods_equal_brute_force_filter_then_rank(built_images):
    store, name, root = built_images
    with Retriever(name, store) as r:
        rows = r.metadata.rows()
        flt = Filter.make(label=["disc", "bars"], where="id NOT LIKE :x", params={"x": "%01%"})
        allowed = np.array([row["position"] for row in rows if row["label"] in ("disc", "bars")
                            and "01" not in row["id"]])
        np.testing.assert_array_equal(r.allowed(flt), allowed)
        inputs = r.inputs()[::5]
        for method in r.methods:
            encoder, index = r.method(method)
            metric = r.manifest["methods"][method]["metric"]
            brute = brute_scores(index.stored(), encoder.transform(inputs), metric)
            scores, positions = r.rank(inputs, 6, method, filter=flt)
            # Raw pixels: distances in the thousands, float32 sums.
            assert_filter_then_rank(scores, positions, brute, allowed, 6, atol=1e-2 if metric == "l2" else 1e-4,
                                    what=method)


# -- the command line, batches and the HTTP API --------------------------------------------------------
def _cli(monkeypatch, capsys, *args):
    from retrieval import cli

    monkeypatch.setattr(sys, "argv", ["retrieval", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_query_filters(home, monkeypatch, capsys):
    base = ["query", "f", "orbit rocket", "--index-dir", home.root, "--json", "-k", "30"]
    code, out, err = _cli(monkeypatch, capsys, *base, "--label", "cars", "--label", "medicine")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 30 and {h["label"] for h in hits} == {"cars", "medicine"}, err
    code, out, err = _cli(monkeypatch, capsys, *base, "--where", "label = :l AND length > :n",
                          "--param", "l=space", "--param", "n=290")
    hits = json.loads(out)
    assert code == 0 and hits and all(h["label"] == "space" for h in hits), err
    code, out, err = _cli(monkeypatch, capsys, *base, "--label", "nothing")
    assert code == 1 and out == "" and err.startswith("error: no item of index 'f' matches the filter")
    assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(monkeypatch, capsys, *base, "--where", "x = 1; DROP TABLE items")
    assert code == 1 and "holds ';'" in err
    code, _, err = _cli(monkeypatch, capsys, *base, "--where", "colour = 'red'")
    assert code == 1 and "no such column: colour" in err and "the columns are id, title, label" in err


def test_cli_batch_lines_carry_their_own_filters(home, monkeypatch, capsys, tmp_path):
    lines = tmp_path / "q.jsonl"
    lines.write_text("\n".join(json.dumps(x) for x in [
        {"text": "orbit rocket", "k": 4},
        {"text": "orbit rocket", "k": 4, "label": "cars"},
        {"text": "orbit rocket", "k": 4, "where": "label = :l", "params": {"l": "medicine"}},
        {"text": "orbit rocket", "label": "nothing"},
        {"text": "orbit rocket", "params": [1]},
    ]) + "\n")
    code, out, err = _cli(monkeypatch, capsys, "query", "f", "--batch", lines, "--index-dir", home.root,
                          "--label", "computers")
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(results) == 5
    assert {h["label"] for h in results[0]["hits"]} == {"computers"}  # the command's filter
    assert {h["label"] for h in results[1]["hits"]} == {"cars"}
    assert {h["label"] for h in results[2]["hits"]} == {"medicine"}
    assert "no item of index 'f' matches" in results[3]["error"] and "must be an object" in results[4]["error"]


def test_http_search_filters(home):
    from fastapi.testclient import TestClient

    from retrieval.server import create_app

    with TestClient(create_app(home, ["f"], warm=False), raise_server_exceptions=False) as client:
        url = "/api/indexes/f/search"
        body = client.post(url, json={"text": "orbit rocket", "k": 20, "label": ["cars", "medicine"]}).json()
        assert len(body["hits"]) == 20 and {h["label"] for h in body["hits"]} == {"cars", "medicine"}
        assert body["filter"]["label"] == ["cars", "medicine"] and body["matches"] > 20
        body = client.post(url, json={"text": "orbit", "where": "length > :n", "params": {"n": 290},
                                      "label": "space"}).json()
        assert body["hits"] and all(h["label"] == "space" for h in body["hits"])
        response = client.post(url, json={"like": "space/doc001.txt", "k": 3, "label": "nothing"})
        assert response.status_code == 200
        body = response.json()
        assert body["hits"] == [] and body["matches"] == 0 and "no label 'nothing'" in body["message"]
        response = client.post(url, json={"text": "orbit", "where": "1; DROP TABLE items"})
        assert response.status_code == 400 and "holds ';'" in response.json()["error"]
        response = client.post(url, json={"text": "orbit", "where": "(SELECT 1 FROM sqlite_master)"})
        assert response.status_code == 400 and "is refused" in response.json()["error"]
        response = client.post(url, json={"text": "orbit", "params": {"n": [1]}, "where": "length > :n"})
        assert response.status_code == 422
        plain = client.post(url, json={"text": "orbit"}).json()
        assert plain["filter"] is None and "matches" not in plain
