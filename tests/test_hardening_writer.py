"""Issue #12, writes: no silent loss from add / sync / remove-items, empty indexes of every kind, evaluate's labels.

Each test works on a copy of the session's tiny document index (``built_docs``,
4 topics x 30) and of its corpus, the copy's manifest pointed at the copied
corpus; the empty-IVF test builds one smaller IVF index for the module.
"""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from retrieval import Store, build_docs_index
from retrieval import config
from retrieval.ann import BACKENDS
from retrieval.api import add_items, remove_items, run_evaluation, search, sync_items
from retrieval.errors import InputError, RetrievalWarning
from retrieval.search import Retriever
from conftest import TINY_DOCS, synthetic_docs, write_corpus
from test_cli import run

N_PER_TOPIC, N = 30, 120  # built_docs: 4 topics


def _copy(home, name, corpus, tmp_path):
    """A private copy of index ``name`` and of its corpus; the copy's manifest records the copied corpus."""
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    store = Store(tmp_path / "home")
    shutil.copytree(home / name, store.root / name)
    store.update_manifest(name, lambda m: m.update(source=str(root), source_root=str(root.resolve())))
    return store, root


@pytest.fixture
def flat(built_docs, tmp_path):
    """``(store, corpus)``: a copy of ``built_docs`` (index "tiny": flat FAISS and sparse TF-IDF)."""
    store, name, corpus = built_docs
    return _copy(store.root, name, corpus, tmp_path)


@pytest.fixture(scope="module")
def built_ivf(tmp_path_factory):
    """``(home, corpus)`` of a small IVF index "ivf" (autoencoder and LSA, 20 items), built once."""
    base = tmp_path_factory.mktemp("ivf")
    write_corpus(base / "corpus", synthetic_docs(5))
    store = Store(base / "home")
    build_docs_index(base / "corpus", "ivf", replace(TINY_DOCS, index_kind="ivf", baselines="lsa", epochs=1),
                     store=store)
    return store.root, base / "corpus"


def ids(store, name="tiny"):
    with Retriever(name, store) as r:
        return {row["id"]: row for row in r.metadata.rows(range(len(r.metadata)))}


def stamp(store, name="tiny"):
    """Changes whenever the index is rewritten (every write swaps in a new manifest)."""
    st = (store.path(name) / "manifest.json").stat()
    return st.st_ino, st.st_mtime_ns


def one_error(code, err):
    """The CLI's failure contract: exit 1, one ``error:`` line, no traceback."""
    assert code == 1, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    return " ".join(err.split())  # rich wraps long lines


# -- 1. sync of a sub-folder, of another folder, and large removals --------------------------
def test_sync_of_a_subfolder_updates_only_its_items(flat):
    store, corpus = flat
    (corpus / "space" / "doc001.txt").unlink()
    (corpus / "space" / "doc002.txt").write_text("space document changed\norbit rocket shuttle moon nasa")
    (corpus / "space" / "fresh.txt").write_text("space fresh\nsatellite telescope astronaut orbit")
    (corpus / "cars" / "doc040.txt").unlink()  # outside the sub-folder: not this sync's business
    report = sync_items(store, "tiny", corpus / "space")
    assert (report.added, report.replaced, report.removed, report.unchanged) == (1, 1, 1, N_PER_TOPIC - 2)
    rows = ids(store)
    assert report.items == len(rows) == N and "cars/doc040.txt" in rows and "space/doc001.txt" not in rows
    # As built (labels from folders): a sub-folder's items get the labels a rebuild would give them.
    assert rows["space/fresh.txt"]["label"] == rows["space/doc002.txt"]["label"] == "space"
    assert report.replaced_examples == ["space/doc002.txt"]


def test_sync_of_a_vanished_subfolder_removes_only_its_items(flat):
    store, corpus = flat
    shutil.rmtree(corpus / "medicine")
    with pytest.raises(InputError, match=r"all 30 items of 'tiny' under medicine/.*--allow-empty"):
        sync_items(store, "tiny", corpus / "medicine")
    report = sync_items(store, "tiny", corpus / "medicine", allow_empty=True)
    assert (report.removed, report.items) == (N_PER_TOPIC, N - N_PER_TOPIC)
    assert not any(i.startswith("medicine/") for i in ids(store))


def test_sync_from_another_folder_refuses_without_new_source(flat, tmp_path, monkeypatch, capsys):
    store, corpus = flat
    other = tmp_path / "other"
    write_corpus(other, synthetic_docs(2, seed=5), prefix="other")
    before = stamp(store)
    code, _, err = run(monkeypatch, capsys, "sync", "tiny", other, "--index-dir", store.root)
    err = one_error(code, err)
    assert str(other) in err and str(corpus.resolve()) in err and "--new-source" in err
    assert stamp(store) == before
    # The collection moved: --new-source mirrors it and records it as the index's source.
    moved = tmp_path / "moved"
    corpus.rename(moved)
    (moved / "cars" / "doc041.txt").unlink()
    code, out, err = run(monkeypatch, capsys, "sync", "tiny", moved, "--new-source", "--json",
                         "--index-dir", store.root)
    assert code == 0, err
    assert (json.loads(out)["removed"], json.loads(out)["unchanged"]) == (1, N - 1)
    assert store.read_manifest("tiny")["source_root"] == str(moved.resolve())
    assert sync_items(store, "tiny", moved / "cars").unchanged == N_PER_TOPIC - 1  # a sub-folder of the new source


def test_sync_removing_most_of_the_index_needs_allow_removals(flat, monkeypatch, capsys):
    store, corpus = flat
    for topic in ("cars", "medicine", "computers"):
        shutil.rmtree(corpus / topic)
    assert 90 / N > config.SYNC_MAX_REMOVED_FRACTION
    before = stamp(store)
    code, _, err = run(monkeypatch, capsys, "sync", "tiny", corpus, "--index-dir", store.root)
    err = one_error(code, err)
    assert "90 of the 120 items" in err and "--allow-removals" in err
    assert stamp(store) == before
    code, out, err = run(monkeypatch, capsys, "sync", "tiny", corpus, "--allow-removals", "--json",
                         "--index-dir", store.root)
    assert code == 0, err
    assert (json.loads(out)["removed"], json.loads(out)["items"]) == (90, N_PER_TOPIC)


# -- 2. add from another folder whose ids collide ----------------------------------------------
def test_add_of_other_files_with_indexed_ids_refuses(flat, tmp_path, monkeypatch, capsys):
    store, corpus = flat
    other = tmp_path / "other"
    write_corpus(other, synthetic_docs(2, seed=5))  # space/doc000.txt ... with other texts
    (other / "space" / "unrelated.txt").write_text("space unrelated\nrocket launch")
    before, rows = stamp(store), ids(store)
    code, _, err = run(monkeypatch, capsys, "add", "tiny", other, "--index-dir", store.root)
    err = one_error(code, err)
    assert "space/doc000.txt" in err and "--replace" in err and str(corpus.resolve()) in err
    assert stamp(store) == before and ids(store) == rows
    code, out, err = run(monkeypatch, capsys, "add", "tiny", other, "--replace", "--json", "--index-dir", store.root)
    assert code == 0, err
    assert (json.loads(out)["replaced"], json.loads(out)["added"]) == (2, 7)


def test_re_adding_a_changed_file_of_the_source_replaces_it_and_says_so(flat, monkeypatch, capsys):
    store, corpus = flat
    (corpus / "cars" / "doc042.txt").write_text("cars document changed\nclutch mileage dealer")
    code, out, err = run(monkeypatch, capsys, "add", "tiny", corpus / "cars", "--index-dir", store.root)
    assert code == 0, err
    assert "replaced 1" in out and "cars/doc042.txt" in " ".join(err.split())


# -- 3. remove-items must not empty an index silently ---------------------------------------------
def test_remove_items_refuses_to_empty_the_index(flat, monkeypatch, capsys):
    store, corpus = flat
    home = ["--index-dir", store.root]
    before = stamp(store)
    code, _, err = run(monkeypatch, capsys, "remove-items", "tiny", "--path-prefix", f"{corpus}/",
                       "--id", "space/doc000.txt", *home)
    err = one_error(code, err)
    assert "all 120 items" in err and "--allow-empty" in err
    assert stamp(store) == before
    code, out, err = run(monkeypatch, capsys, "remove-items", "tiny", "--path-prefix", f"{corpus}/",
                         "--allow-empty", "--json", *home)
    assert code == 0, err
    assert json.loads(out)["items"] == 0


# -- 4. an empty index works, whatever its kind -------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_every_backend_can_be_emptied_and_refilled(kind, tmp_path):
    # With segments, an emptied index is a compaction that keeps no row: the
    # method's template (its IVF cells, if any), which must answer no hits and
    # take rows again, and then save and load like any index.
    from retrieval.ann import load_index, merge

    rng = np.random.default_rng(0)
    binary = kind.startswith("binary")
    codes = rng.integers(0, 256, (60, 2), dtype=np.uint8) if binary else rng.normal(size=(60, 8)).astype(np.float32)
    metric = "hamming" if binary else "cosine"
    index = BACKENDS[kind](metric)
    index.add(codes)
    empty = merge(index.template(), [(index, np.array([], np.int64))])
    assert len(empty) == 0
    empty.add(codes[:5])
    empty.save(tmp_path)
    loaded = load_index(kind, tmp_path, metric, empty.search_params(), empty.factory)
    _, positions = loaded.search(codes[:1], 3)
    assert len(loaded) == 5 and positions[0, 0] == 0


def test_an_emptied_ivf_index_saves_answers_and_refills(built_ivf, tmp_path, monkeypatch, capsys):
    store, corpus = _copy(built_ivf[0], "ivf", built_ivf[1], tmp_path)
    home = ["--index-dir", store.root]
    shutil.rmtree(corpus)
    code, out, err = run(monkeypatch, capsys, "sync", "ivf", corpus, "--allow-empty", "--json", *home)
    assert code == 0, err
    assert json.loads(out)["items"] == 0
    code, out, err = run(monkeypatch, capsys, "query", "ivf", "rocket orbit", "--json", *home)
    assert code == 0, err
    assert json.loads(out) == [] and "holds no items" in " ".join(err.split())
    code, out, err = run(monkeypatch, capsys, "add", "ivf", built_ivf[1], "--json", *home)
    assert code == 0, err
    assert json.loads(out)["added"] == 20
    assert search(store, "ivf", "orbit rocket launch nasa", k=3, method="lsa").hits[0].label == "space"


# -- 5. evaluate: query labels the index does not have ------------------------------------------------
def test_evaluate_leaves_out_queries_of_unknown_labels(flat, tmp_path):
    store, _ = flat
    queries = tmp_path / "queries"
    write_corpus(queries, synthetic_docs(3, seed=1), prefix="q")
    write_corpus(queries, [("sports", "football goal match referee league")] * 2, prefix="s")
    with pytest.warns(RetrievalWarning, match=r"2 of 14 queries.*'sports'.*left out") as caught:
        report = run_evaluation(store, "tiny", queries, labels_from_folders=True, k=5)
    assert len(caught) == 1
    assert report["queries"] == 12
    only_unknown = tmp_path / "unknown"
    write_corpus(only_unknown, [("sports", "football goal"), ("weather", "rain snow")], prefix="u")
    with pytest.raises(InputError, match=r"none of the 2 queries.*'sports', 'weather'.*--labels-from-folders"):
        run_evaluation(store, "tiny", only_unknown, labels_from_folders=True, k=5)


# -- 6. nothing to add, nothing to sync from ----------------------------------------------------------
def test_add_of_an_empty_or_unreadable_folder_changes_nothing(flat, tmp_path, monkeypatch, capsys):
    store, _ = flat
    home = ["--index-dir", store.root]
    empty, junk = tmp_path / "empty", tmp_path / "junk"
    empty.mkdir()
    (junk / "x").mkdir(parents=True)
    (junk / "x" / "blob.txt").write_bytes(bytes(range(256)) * 4)  # binary: skipped
    before = stamp(store)
    for folder in (empty, junk, tmp_path / "missing"):
        code, _, err = run(monkeypatch, capsys, "add", "tiny", folder, *home)
        err = one_error(code, err)
        assert str(folder) in err
    assert "missing does not exist" in err
    assert stamp(store) == before


def test_sync_of_a_missing_folder_changes_nothing(flat, tmp_path, monkeypatch, capsys):
    store, corpus = flat
    before = stamp(store)
    code, _, err = run(monkeypatch, capsys, "sync", "tiny", corpus / "typo", "--index-dir", store.root)
    err = one_error(code, err)
    assert "typo does not exist" in err and "nothing to sync" in err
    assert stamp(store) == before
