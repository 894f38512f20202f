"""Index folders: atomic writes, format checks, list/info/remove."""
import json
import os

import pytest

from retrieval import Store, build_docs_index
from retrieval.errors import IndexExists, IndexFormatError, IndexNotFound, InputError
from retrieval.search import Retriever
from retrieval.storage import FORMAT_VERSION, index_home
from conftest import FIRST_SEGMENT, TINY_DOCS


def test_home_resolution(tmp_path, monkeypatch):
    assert index_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("RETRIEVAL_HOME", str(tmp_path / "env"))
    assert index_home() == tmp_path / "env"
    monkeypatch.delenv("RETRIEVAL_HOME")
    assert index_home().name == "indexes"


def test_writer_is_atomic(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError):
        with store.writer("x") as tmp:
            (tmp / "manifest.json").write_text("{}")
            raise RuntimeError("killed mid-build")
    assert not store.exists("x")
    assert os.listdir(tmp_path) == []  # no temp folder left behind


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a/b", "x" * 200])
def test_bad_names(tmp_path, name):
    with pytest.raises(InputError, match="invalid index name"):
        Store(tmp_path).path(name)


def test_interrupted_build_keeps_previous_index(built_docs, docs_dir, monkeypatch):
    store, name, _ = built_docs
    before = Retriever(name, store).search("orbit rocket launch", k=3)

    from retrieval.writer import IndexWriter

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # the user pressed Ctrl-C during training

    monkeypatch.setattr(IndexWriter, "fit", boom)
    with pytest.raises(KeyboardInterrupt):
        build_docs_index(docs_dir, name, TINY_DOCS, store=store, force=True)
    after = Retriever(name, store).search("orbit rocket launch", k=3)
    assert [h.id for h in after] == [h.id for h in before]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]


def test_refuses_overwrite_without_force(built_docs, docs_dir):
    store, name, _ = built_docs
    with pytest.raises(IndexExists, match="--force"):
        build_docs_index(docs_dir, name, TINY_DOCS, store=store)


def test_missing_index(tmp_path):
    with pytest.raises(IndexNotFound, match="no index named 'ghost'"):
        Retriever("ghost", Store(tmp_path))


def _copy_index(built_docs, tmp_path):
    import shutil

    store, name, _ = built_docs
    copy = Store(tmp_path / "copy")
    shutil.copytree(store.path(name), copy.path(name))
    return copy, name


def test_newer_format_version_is_refused(built_docs, tmp_path):
    store, name = _copy_index(built_docs, tmp_path)
    path = store.path(name) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="newer retrieval"):
        Retriever(name, store)


def test_corrupted_manifest(built_docs, tmp_path):
    store, name = _copy_index(built_docs, tmp_path)
    (store.path(name) / "manifest.json").write_text('{"format_version": 1, "modal')
    with pytest.raises(IndexFormatError, match="corrupt"):
        Retriever(name, store)


def test_corrupted_faiss_file(built_docs, tmp_path):
    store, name = _copy_index(built_docs, tmp_path)
    (store.path(name) / FIRST_SEGMENT / "methods" / "ae" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexFormatError, match="index.faiss"):
        Retriever(name, store).search("orbit", k=2)


def test_manifest_contents(built_docs):
    store, name, _ = built_docs
    m = store.read_manifest(name)
    assert m["format_version"] == FORMAT_VERSION and m["modality"] == "docs"
    assert m["counts"]["items"] == 120 and m["counts"]["labels"] == 4
    assert set(m["methods"]) == {"ae", "lsa", "tfidf"}
    assert m["methods"]["ae"]["dim"] == 4 and m["methods"]["ae"]["metric"] == "cosine"
    assert {"keras", "faiss-cpu", "numpy", "python"} <= set(m["versions"])
    assert m["config"]["code_dim"] == 4 and m["created_at"]
    files = {p.name for p in store.path(name).rglob("*")}
    assert {"manifest.json", "items.sqlite", "encoder.keras", "index.faiss", "vocabulary.json", "idf.npy"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]


def test_remove(built_docs, tmp_path):
    store, name = _copy_index(built_docs, tmp_path)
    assert store.names() == [name]
    store.remove(name)
    assert store.names() == []
    with pytest.raises(IndexNotFound):
        store.remove(name)
