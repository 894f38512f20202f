"""Living indexes (issue #5): add, remove, sync, retrain, outliers, novelty, drift."""
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from retrieval import Store, build_docs_index, build_images_index
from retrieval.api import add_items, outliers, remove_items, retrain, search, sync_items
from retrieval.errors import IndexNotFound, InputError
from retrieval.search import Retriever
from conftest import TINY_DOCS, TINY_IMAGES, synthetic_docs, synthetic_images, write_corpus
from test_cli import run

JUNK_RNG = np.random.default_rng(7)


def junk_text(n_words: int = 60) -> str:
    """Words of no language the index knows (random letters)."""
    letters = np.array(list("bcdfghjklmnpqrstvwxz"))
    return " ".join("".join(JUNK_RNG.choice(letters, JUNK_RNG.integers(5, 10))) for _ in range(n_words))


@pytest.fixture
def living(tmp_path):
    """A tiny document index built from corpus/ (4 topics x 20), with its store and folders."""
    corpus = tmp_path / "corpus"
    write_corpus(corpus, synthetic_docs(20))
    store = Store(tmp_path / "home")
    build_docs_index(corpus, "live", replace(TINY_DOCS, epochs=4), store=store)
    return store, corpus, tmp_path


def count(store, name="live"):
    return store.read_manifest(name)["counts"]["items"]


def ids(store, name="live"):
    retriever = Retriever(name, store)
    try:
        return {row["id"] for row in retriever.metadata.rows(range(len(retriever.metadata)))}
    finally:
        retriever.close()


def test_add_encodes_new_items_and_is_idempotent(living):
    store, corpus, tmp = living
    extra = tmp / "extra"
    write_corpus(extra, synthetic_docs(5, seed=3), prefix="new")
    before = Retriever("live", store).method("ae")[0].transform(
        Retriever("live", store).query_inputs(["rocket orbit launch"]))
    report = add_items(store, "live", extra)
    assert (report.added, report.replaced, report.unchanged, report.items) == (20, 0, 0, 100)
    assert count(store) == 100 and "space/new000.txt" in ids(store)
    retriever = Retriever("live", store)
    # No retraining: the stored model encodes exactly as before.
    assert np.array_equal(retriever.method("ae")[0].transform(retriever.query_inputs(["rocket orbit launch"])), before)
    for method in retriever.methods:
        assert len(retriever.method(method)[1]) == 100
    assert retriever.inputs().shape[0] == 100
    hits = retriever.like("space/new000.txt", 5, method="tfidf")
    assert [h.label for h in hits].count("space") >= 4
    before = (store.path("live") / "manifest.json").stat()
    again = add_items(store, "live", extra)
    assert (again.added, again.unchanged, again.items) == (0, 20, 100)
    after = (store.path("live") / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # nothing rewritten
    assert store.read_manifest("live")["drift"]["added_since_training"] == 20


def test_changed_file_is_replaced(living):
    store, corpus, _ = living
    path = corpus / "cars" / "doc020.txt"
    path.write_text("cars document changed\nengine brake tire dealer sedan horsepower clutch")
    report = add_items(store, "live", corpus)
    assert (report.added, report.replaced, report.unchanged) == (0, 1, 79)
    hits = search(store, "live", "sedan horsepower clutch", k=1, method="tfidf").hits
    assert hits[0].id == "cars/doc020.txt" and "changed" in hits[0].snippet


def test_added_subfolder_keeps_the_id_scheme(living):
    store, corpus, _ = living
    write_corpus(corpus / "space" / "later", synthetic_docs(2, seed=5)[:2], prefix="late")
    report = add_items(store, "live", corpus / "space" / "later", labels_from_folders=False)
    assert report.added == 2
    assert {"space/later/space/late000.txt", "space/later/space/late001.txt"} <= ids(store)
    # A later sync of the whole corpus sees them as already indexed.
    assert sync_items(store, "live", corpus).unchanged == 82


def test_remove_by_id_and_prefix(living):
    store, corpus, _ = living
    report = remove_items(store, "live", ids=["space/doc000.txt", "cars/doc020.txt"])
    assert (report.removed, report.items) == (2, 78)
    assert "space/doc000.txt" not in ids(store)
    retriever = Retriever("live", store)
    for method in retriever.methods:
        assert len(retriever.method(method)[1]) == 78
    hits = retriever.search("orbit rocket nasa", 78, method="tfidf")
    assert "space/doc000.txt" not in {h.id for h in hits} and len(hits) == 78
    report = remove_items(store, "live", path_prefix=str(corpus / "medicine") + "/")
    assert (report.removed, report.items) == (20, 58)
    assert not any(i.startswith("medicine/") for i in ids(store))


def test_remove_unknown_id_changes_nothing(living):
    store, _, _ = living
    with pytest.raises(InputError, match="no item with id 'ghost'"):
        remove_items(store, "live", ids=["space/doc001.txt", "ghost"])
    assert count(store) == 80 and "space/doc001.txt" in ids(store)
    with pytest.raises(InputError, match="--id ID"):
        remove_items(store, "live")


def test_sync_adds_changes_and_drops(living):
    store, corpus, _ = living
    (corpus / "space" / "doc001.txt").unlink()
    (corpus / "cars" / "doc021.txt").write_text("cars document\nclutch clutch mileage dealer brand new text")
    write_corpus(corpus, [("computers", "keyboard monitor software printer modem cable")], prefix="fresh")
    report = sync_items(store, "live", corpus)
    assert (report.added, report.replaced, report.removed, report.unchanged) == (1, 1, 1, 78)
    assert count(store) == 80 and "space/doc001.txt" not in ids(store)


def test_sync_refuses_to_empty_an_index(living):
    store, corpus, _ = living
    shutil.rmtree(corpus)
    with pytest.raises(InputError, match="--allow-empty"):
        sync_items(store, "live", corpus)
    assert count(store) == 80
    report = sync_items(store, "live", corpus, allow_empty=True)
    assert (report.removed, report.items) == (80, 0)
    assert search(store, "live", "rocket orbit", k=5).hits == []


def test_missing_index_and_wrong_modality(living, tmp_path):
    store, corpus, _ = living
    with pytest.raises(IndexNotFound):
        add_items(store, "nothing", corpus)
    synthetic_images(tmp_path / "pictures", n_per_class=2)
    with pytest.raises(InputError, match="holds documents"):
        add_items(store, "live", tmp_path / "pictures")
    assert count(store) == 80


def test_novelty_outliers_drift_and_retrain(living):
    store, corpus, tmp = living
    junk = tmp / "junk"
    junk.mkdir()
    for i in range(8):
        (junk / f"junk{i}.txt").write_text(junk_text())
    report = add_items(store, "live", junk, labels_from_folders=False)
    assert report.added == 8
    top = outliers(store, "live", k=8)
    assert sum(r["id"].startswith("junk") for r in top) >= 7
    assert top[0]["percentile"] == 100.0 and top[0]["novelty"] >= top[-1]["novelty"]
    drift = store.read_manifest("live")["drift"]
    assert drift["added_since_training"] == 8 and drift["added_novelty_percentile_mean"] > 90
    assert drift["retrain_recommended"] and "unlike what the models learned" in drift["reasons"][0]
    typical = search(store, "live", "orbit rocket launch nasa satellite moon", k=3).novelty
    strange = search(store, "live", "rocket " + junk_text(20), k=3).novelty  # one known word
    assert strange["percentile"] > typical["percentile"]
    manifest = retrain(store, "live")
    assert manifest["drift"]["added_since_training"] == 0 and manifest["counts"]["items"] == 88
    assert len(Retriever("live", store).search("rocket orbit", 5)) == 5


def test_cli_living_commands(monkeypatch, capsys, living):
    store, corpus, tmp = living
    home = ["--index-dir", store.root]
    extra = tmp / "more"
    write_corpus(extra, synthetic_docs(2, seed=9), prefix="more")
    code, out, err = run(monkeypatch, capsys, "add", "live", extra, "--json", *home)
    assert code == 0, err
    assert json.loads(out)["added"] == 8
    code, out, err = run(monkeypatch, capsys, "remove-items", "live", "--id", "space/more000.txt", *home)
    assert code == 0 and "removed 1" in out
    code, out, err = run(monkeypatch, capsys, "info", "live", *home)
    text = " ".join(out.split())  # rich wraps long lines
    assert code == 0 and "trained on 80 items; since then added 8, removed 1" in text
    assert "additions' mean reconstruction error" in text
    code, _, err = run(monkeypatch, capsys, "remove-items", "live", "--id", "nope", *home)
    assert code == 1 and "no item with id 'nope'" in err
    code, out, err = run(monkeypatch, capsys, "outliers", "live", "-k", "3", "--json", *home)
    assert code == 0 and len(json.loads(out)) == 3
    code, out, err = run(monkeypatch, capsys, "query", "live", "rocket orbit", "-k", "2", *home)
    assert code == 0 and "novelty of the query" in err
    code, _, err = run(monkeypatch, capsys, "sync", "live", tmp / "vanished", *home)  # not the index's source
    assert code == 1 and "--new-source" in " ".join(err.split()) and count(store) == 87
    code, _, err = run(monkeypatch, capsys, "add", "ghost", extra, *home)
    assert code == 1 and "no index named 'ghost'" in err


def test_image_index_add_and_outlier_sheet(tmp_path, monkeypatch, capsys):
    synthetic_images(tmp_path / "images")
    store = Store(tmp_path / "home")
    build_images_index(tmp_path / "images", "pics", TINY_IMAGES, store=store)
    synthetic_images(tmp_path / "more", n_per_class=2, seed=4)
    for path in sorted((tmp_path / "more").rglob("*.png")):
        path.rename(path.with_name("new-" + path.name))  # other ids than the indexed images
    report = add_items(store, "pics", tmp_path / "more")
    assert report.added == 6 and report.items == 42
    retriever = Retriever("pics", store)
    assert len(retriever.method("pca")[1]) == 42 and retriever.inputs().shape[0] == 42
    from retrieval.api import outlier_sheet

    rows = outliers(store, "pics", k=4)
    out = outlier_sheet(store, "pics", rows, tmp_path / "outliers.png")
    assert out.exists() and out.stat().st_size > 1000
    liked = search(store, "pics", like="disc/new-disc00.png", k=3, show=tmp_path / "like.png")
    assert (tmp_path / "like.png").exists() and "disc/new-disc00.png" not in {h.id for h in liked.hits}
    noisy = search(store, "pics", str(tmp_path / "more" / "disc" / "new-disc00.png"), k=3)
    assert noisy.novelty is not None and 0 <= noisy.novelty["percentile"] <= 100
    home = ["--index-dir", store.root]
    code, out, err = run(monkeypatch, capsys, "outliers", "pics", "-k", "2", "--show", tmp_path / "o.png", *home)
    assert code == 0 and (tmp_path / "o.png").exists() and "reconstructions written" in err
    code, _, err = run(monkeypatch, capsys, "remove-items", "pics", "--path-prefix", "disc/", *home)
    assert code == 0 and count(store, "pics") == 42 - 14
    code, out, err = run(monkeypatch, capsys, "retrain", "pics", "--json", *home)
    assert code == 0, err
    assert json.loads(out)["drift"] == {**json.loads(out)["drift"], "added_since_training": 0, "trained_items": 28}


def test_open_retriever_sees_a_swapped_index(living):
    store, corpus, tmp = living
    retriever = Retriever("live", store)
    assert len(retriever.search("orbit rocket", 100, method="tfidf")) == 80
    write_corpus(tmp / "late", synthetic_docs(1, seed=11), prefix="late")
    add_items(store, "live", tmp / "late")
    hits = retriever.search("orbit rocket", 100, method="tfidf")  # the same object, opened before the add
    assert len(hits) == 84 and "space/late000.txt" in {h.id for h in hits}
    assert retriever.manifest["counts"]["items"] == 84
