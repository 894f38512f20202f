"""The index model: format versions and migration, the package's structure rules, the in-memory API."""
from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DOCS, TINY_IMAGES, synthetic_docs

from retrieval import Index, IndexFormatError, IndexLocked, InputError, Retriever, Store, add_items
from retrieval.storage import FORMAT_VERSION, manifest_checksum, migrate, read_raw_manifest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def v1_store(tmp_path):
    """A copy of the format-1 indexes built by retrieval 0.1.0."""
    shutil.copytree(FIXTURES / "home", tmp_path / "home")
    return Store(tmp_path / "home")


def _hits(retriever: Retriever, name: str) -> dict:
    out = {}
    for method, queries in EXPECTED[name].items():
        if name == "images1":
            out[method] = {q: [h.id for h in retriever.like(q, 5, method)] for q in queries}
        else:
            out[method] = {q: [h.id for h in retriever.search(q, 5, method)] for q in queries}
    return out


# -- format 1 -> 2 ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["docs1", "bits1", "images1"])
def test_format_1_index_is_read_as_is_with_the_same_hits(v1_store, name):
    with Retriever(name, v1_store) as r:
        assert r.manifest["format_version"] == FORMAT_VERSION and r.manifest["migrated_from"] == 1
        assert _hits(r, name) == EXPECTED[name]
    assert read_raw_manifest(v1_store.path(name))["format_version"] == 1  # reading changed nothing on disk


@pytest.mark.parametrize("name", ["docs1", "bits1", "images1"])
def test_upgrade_in_place_keeps_the_hits(v1_store, name):
    before = {p.relative_to(v1_store.path(name)): p.read_bytes() for p in v1_store.path(name).rglob("*")
              if p.is_file() and p.name != "manifest.json"}
    v1_store.upgrade(name)
    raw = read_raw_manifest(v1_store.path(name))
    assert raw["format_version"] == FORMAT_VERSION and raw["migrated_from"] == 1
    assert raw["checksum"] == manifest_checksum(raw)
    assert raw["segments"] == [{"name": ".", "items": raw["counts"]["items"], "deleted": 0, "deletions": None,
                                "labels": None}]
    for info in raw["methods"].values():
        assert "search" in info and "factory" in info
    after = {p.relative_to(v1_store.path(name)): p.read_bytes() for p in v1_store.path(name).rglob("*")
             if p.is_file() and p.name != "manifest.json"}
    assert after == before  # only the manifest changed
    with Retriever(name, v1_store) as r:
        assert _hits(r, name) == EXPECTED[name]
    assert v1_store.upgrade(name)["checksum"] == raw["checksum"]  # a current index is left alone


def test_migration_is_a_pure_function_with_explicit_keys():
    raw = read_raw_manifest(FIXTURES / "home" / "bits1")
    assert raw["format_version"] == 1 and "search" not in raw["methods"]["ae"]
    new = migrate(raw)
    assert raw["format_version"] == 1  # the input is not modified
    assert new["format_version"] == FORMAT_VERSION and new["novelty"] is not None and new["drift"] is not None
    assert [s["name"] for s in new["segments"]] == ["."] and new["generation"] == 0
    assert new["methods"]["ae"]["search"] == {} and new["methods"]["ae"]["index"] == "binary-flat"


def test_format_1_index_without_checksums_is_sealed_by_the_upgrade(v1_store):
    path = v1_store.path("docs1") / "manifest.json"
    m = json.loads(path.read_text())
    del m["files"], m["checksum"]  # as format 1 wrote before checksums existed
    path.write_text(json.dumps(m))
    assert Retriever("docs1", v1_store).search("orbit rocket nasa launch", 5)  # read unverified
    v1_store.upgrade("docs1")
    raw = read_raw_manifest(v1_store.path("docs1"))
    assert raw["format_version"] == FORMAT_VERSION and "files" in raw and raw["checksum"] == manifest_checksum(raw)
    (v1_store.path("docs1") / "oov.npy").write_bytes(b"tampered")
    with pytest.raises(IndexFormatError, match="oov.npy"):
        Retriever("docs1", v1_store)


def test_writing_to_a_format_1_index_upgrades_it(v1_store, tmp_path):
    folder = tmp_path / "more" / "space"
    folder.mkdir(parents=True)
    (folder / "new.txt").write_text("rocket orbit moon launch nasa shuttle astronaut")
    report = add_items(v1_store, "docs1", tmp_path / "more")
    assert report.added == 1 and report.items == 33
    raw = read_raw_manifest(v1_store.path("docs1"))
    assert raw["format_version"] == FORMAT_VERSION and raw["counts"]["items"] == 33
    assert [s["name"] for s in raw["segments"]] == [".", "g000001"]  # the old files stay where they were
    with Retriever("docs1", v1_store) as r:
        assert r.search("rocket orbit moon launch nasa shuttle", 3, "tfidf")[0].id == "space/new.txt"


def test_upgrade_takes_the_writer_lock(v1_store):
    with v1_store.lock("docs1"):
        import threading

        errors = []
        thread = threading.Thread(target=lambda: errors.append(_try_upgrade(v1_store)))
        thread.start()
        thread.join()
    assert isinstance(errors[0], IndexLocked)
    assert read_raw_manifest(v1_store.path("docs1"))["format_version"] == 1


def _try_upgrade(store):
    try:
        store.upgrade("docs1")
    except IndexLocked as exc:
        return exc
    return None


def _cli(monkeypatch, capsys, *args):
    from retrieval import cli

    monkeypatch.setattr(sys, "argv", ["retrieval", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_info_list_and_upgrade(monkeypatch, capsys, v1_store):
    monkeypatch.setenv("COLUMNS", "250")  # no wrapping of rich's lines
    home = ["--index-dir", str(v1_store.root)]
    code, out, err = _cli(monkeypatch, capsys, "info", "images1", *home)
    assert code == 0 and "format 1" in out and "retrieval upgrade images1" in err
    code, out, _ = _cli(monkeypatch, capsys, "list", "--json", *home)
    assert {row["name"]: row["format_version"] for row in json.loads(out)}["images1"] == 1
    code, _, err = _cli(monkeypatch, capsys, "upgrade", "images1", *home)
    assert code == 0 and f"from format 1 to {FORMAT_VERSION}" in err
    code, _, err = _cli(monkeypatch, capsys, "upgrade", "images1", *home)
    assert code == 0 and f"already format {FORMAT_VERSION}" in err
    code, out, err = _cli(monkeypatch, capsys, "info", "images1", *home)
    assert f"format {FORMAT_VERSION}" in out and "upgrade" not in err


def test_build_saves_faiss_factory_and_search_parameters(tmp_path):
    from dataclasses import replace

    from retrieval import build_docs_index
    from retrieval.ann import IVFIndex

    root = tmp_path / "c"
    from conftest import write_corpus

    write_corpus(root, synthetic_docs(n_per_topic=60))
    manifest = build_docs_index(root, "ivf", replace(TINY_DOCS, index_kind="ivf"), store=Store(tmp_path / "h"))
    ae = manifest["methods"]["ae"]
    assert ae["index"] == "ivf" and ae["factory"].startswith("IVF") and ae["search"] == {"nprobe": 16}
    # The saved parameters are what an opened index searches with, not the code's defaults.
    path = tmp_path / "h" / "ivf" / "manifest.json"
    m = json.loads(path.read_text())
    m["methods"]["ae"]["search"] = {"nprobe": 1}
    m["checksum"] = manifest_checksum(m)
    path.write_text(json.dumps(m))
    with Retriever("ivf", Store(tmp_path / "h")) as r:
        index = r.method("ae")[1]
        assert isinstance(index, IVFIndex) and index.index_.nprobe == 1


# -- structure rules ------------------------------------------------------------------------
_MODALITY_TEST = re.compile(r"""(==|!=)\s*["'](docs|images)["']|["'](docs|images)["']\s*(==|!=)"""
                            r"""|\[["'](docs|images)["']\]|modality["']?\]?\)?\s*(==|!=|\bin\b)""")


def _sources():
    return sorted((ROOT / "retrieval").rglob("*.py"))


def test_no_module_but_modality_compares_the_modality_string():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources() if p.name != "modality.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if _MODALITY_TEST.search(line)]
    assert not found
    assert _MODALITY_TEST.search('if manifest["modality"] == "docs":')  # the pattern does catch it


def test_sql_lives_only_in_the_metadata_module():
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE items|DELETE FROM|CREATE TABLE)\b|import sqlite3")
    found = [str(p.relative_to(ROOT)) for p in _sources() if sql.search(p.read_text())
             and p.relative_to(ROOT).as_posix() != "retrieval/storage/metadata.py"]
    assert not found


def test_index_file_names_are_spelled_once():
    names = ["manifest.json", "items.sqlite", "novelty.npy", "novelty_reference.npy", "oov.npy", "inputs.npz",
             "pixels.npy"]
    spelled = {name: [p.relative_to(ROOT).as_posix() for p in _sources() if f'"{name}"' in p.read_text()]
               for name in names}
    allowed = {"retrieval/storage/layout.py", "retrieval/modality.py"}
    assert all(set(where) <= allowed and len(where) == 1 for where in spelled.values()), spelled


def test_docstring_references_resolve():
    """Every ``:func:`retrieval.x.y``` / ``:class:`` / ``:data:`` names something that exists."""
    ref = re.compile(r":(?:func|class|data|meth|mod):`~?(retrieval(?:\.\w+)+)`")
    missing = []
    for path in _sources():
        for target in set(ref.findall(path.read_text())):
            parts = target.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(f"{path.relative_to(ROOT)}: {target}")
                break
    assert not missing


def test_import_touches_no_global_state_and_loads_nothing_heavy():
    code = ("import sys, retrieval; heavy = [m for m in ('tensorflow', 'keras', 'faiss', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    source = "\n".join(p.read_text() for p in _sources())
    assert "matplotlib.use(" not in source


def test_public_names_do_not_shadow_submodules():
    import retrieval

    for name in retrieval.__all__:
        value = getattr(retrieval, name)
        assert not callable(value) or importlib.util.find_spec(f"retrieval.{name}") is None, name
    assert retrieval.search.__name__ == "retrieval.search"  # the sub-package, not a function


# -- the Python API for data in memory ----------------------------------------------------------------
@pytest.fixture(scope="module")
def memory_index(tmp_path_factory):
    docs = synthetic_docs(n_per_topic=20)
    home = tmp_path_factory.mktemp("api") / "home"
    idx = Index.build_docs([text for _, text in docs], labels=[label for label, _ in docs], name="notes",
                           store=home, config=TINY_DOCS)
    return idx, home, docs


def test_index_in_memory_build_search_open(memory_index):
    idx, home, docs = memory_index
    assert len(idx) == 80 and idx.methods == ["ae", "lsa", "tfidf"]
    hits = idx.search("orbit rocket nasa launch satellite", k=5, method="tfidf")
    assert len(hits) == 5 and all(h.label == "space" for h in hits)
    again = Index.open("notes", home)
    assert [h.id for h in again.search("orbit rocket nasa", k=5)] == [h.id for h in idx.search("orbit rocket nasa", k=5)]
    assert again.like(hits[0].id, k=3)[0].id != hits[0].id


def test_index_in_memory_add_remove_evaluate(tmp_path):
    docs = synthetic_docs(n_per_topic=10)
    idx = Index.build_docs([{"id": f"d{i}", "text": t, "label": lab} for i, (lab, t) in enumerate(docs)],
                           name="live", store=tmp_path, config=TINY_DOCS)
    report = idx.add(["rocket orbit nasa moon launch shuttle"], ids=["new"], labels=["space"])
    assert report.added == 1 and len(idx) == 41
    assert idx.search("rocket orbit nasa moon launch shuttle", k=1, method="tfidf")[0].id == "new"
    assert idx.remove("new").removed == 1 and len(idx) == 40
    report = idx.evaluate(["rocket orbit nasa", "engine brake tire"], labels=["space", "cars"], k=5)
    assert set(report["methods"]) == {"ae", "lsa", "tfidf"} and report["methods"]["tfidf"]["precision@10"] > 0.5
    with pytest.raises(InputError, match="label"):
        idx.evaluate(["rocket orbit"])


def test_index_in_memory_images(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((24, 16, 16), np.uint8)
    labels = []
    for i in range(24):
        if i % 2:
            images[i, 4:12, 4:12] = 200  # squares
            labels.append("square")
        else:
            images[i, :, ::4] = 220  # stripes
            labels.append("stripes")
    images = np.clip(images + rng.integers(0, 20, images.shape), 0, 255).astype(np.uint8)
    idx = Index.build_images(images, labels=labels, name="pics", store=tmp_path, config=TINY_IMAGES)
    assert len(idx) == 24 and idx.manifest["images"] == {"size": 16, "color": "grey", "fit": "pad"}
    hits = idx.search(images[1], k=3, method="pixels")
    assert hits[0].id == "1"
    idx.add([images[3] / 255.0], ids=["float-copy"])  # floats in [0, 1] are scaled
    assert idx.search(images[3], k=1, method="pixels")[0].id in {"3", "float-copy"}


@pytest.mark.parametrize("bad, match", [
    ("no/such/folder", "does not exist"),  # a string is a path, as on the command line
    (b"raw bytes", "not a single bytes"),
    ([1, 2, 3], "document 0 is a int"),
    ([{"title": "no text"}], "document 0"),
    (["alpha beta", "alpha beta"], None),
])
def test_index_in_memory_bad_input(tmp_path, bad, match):
    if match is None:  # texts without ids get distinct positional ids: accepted, both indexed
        with pytest.raises(InputError, match="at least 4 documents"):
            Index.build_docs(bad, name="x", store=tmp_path, config=TINY_DOCS)
        return
    with pytest.raises(InputError, match=match):
        Index.build_docs(bad, name="x", store=tmp_path, config=TINY_DOCS)
    with pytest.raises(InputError, match="duplicate document id 'a'"):
        Index.build_docs([{"id": "a", "text": "x y"}, {"id": "a", "text": "z w"}], name="x", store=tmp_path)
    with pytest.raises(InputError, match="2 items but 1 labels"):
        Index.build_docs(["a b", "c d"], labels=["x"], name="x", store=tmp_path)


def test_readme_python_example_runs(tmp_path):
    """The README's Python example, run as a newcomer would paste it."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(from retrieval import Index\n.*?)```", readme, re.S)
    assert block, "README has a Python example starting with 'from retrieval import Index'"
    code = block.group(1)
    env = {"RETRIEVAL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "id='launch-2'" in out.stdout  # the added item is found
    assert (tmp_path / "notes" / "manifest.json").exists()


def test_build_functions_take_data_in_memory(tmp_path):
    """build_docs_index(["doc one", ...]) once failed with a TypeError: sources had to be paths."""
    from retrieval import build_docs_index

    texts = [text for _, text in synthetic_docs(n_per_topic=5)]
    manifest = build_docs_index(texts, "mem", TINY_DOCS, store=Store(tmp_path))
    assert manifest["counts"]["items"] == 20 and manifest["source"] == "(in memory)"
    with Retriever("mem", Store(tmp_path)) as r:
        assert r.search(texts[0], 1, "tfidf")[0].id == "0"


def test_removing_from_an_index_without_inputs_keeps_novelty_in_step(tmp_path):
    """remove-items on a --no-keep-inputs index must drop the removed items' novelty scores too."""
    from dataclasses import replace

    from retrieval import remove_items
    from conftest import write_corpus

    write_corpus(tmp_path / "c", synthetic_docs(n_per_topic=8))
    store = Store(tmp_path / "h")
    from retrieval import build_docs_index

    build_docs_index(tmp_path / "c", "lean", replace(TINY_DOCS, keep_inputs=False), store=store)
    remove_items(store, "lean", ids=["space/doc000.txt", "cars/doc008.txt"])
    with Retriever("lean", store) as r:
        per_item = [r.segments.per_item(lambda seg, f=f: np.load(f(seg))) for f in (lambda s: s.novelty, lambda s: s.oov)]
        assert len(per_item[0]) == 30 == len(per_item[1]) == len(r.metadata)
        assert len(r.outliers(30)) == 30


def test_retrain_gives_an_index_without_novelty_its_scores(v1_store):
    path = v1_store.path("docs1")
    m = json.loads((path / "manifest.json").read_text())
    for name in ("novelty.npy", "novelty_reference.npy"):  # as built before novelty scores existed
        (path / name).unlink()
        del m["files"][name]
    del m["novelty"], m["drift"]
    m["checksum"] = manifest_checksum(m)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="retrain"):
        Retriever("docs1", v1_store).outliers(3)
    from retrieval import retrain

    manifest = retrain(v1_store, "docs1")
    assert manifest["novelty"]["reference_items"] == 32
    assert len(Retriever("docs1", v1_store).outliers(3)) == 3


def test_format_2_requires_the_files_map(built_docs, tmp_path):
    store, name, _ = built_docs
    shutil.copytree(store.path(name), tmp_path / "h" / name)
    path = tmp_path / "h" / name / "manifest.json"
    m = json.loads(path.read_text())
    del m["files"]
    m["checksum"] = manifest_checksum(m)  # a consistent checksum, but nothing left to verify
    path.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="'files' map was removed"):
        Retriever(name, Store(tmp_path / "h"))


def test_index_api_errors_name_the_bad_value(memory_index):
    idx, _, _ = memory_index
    with pytest.raises(InputError, match="got a NoneType"):
        idx.search(None)
    with pytest.raises(InputError, match="unknown option 'epoch'"):
        Index.build_docs(["a b"] * 5, name="typo", store=idx.store, epoch=3)
    report = idx.evaluate(["xyzzy plugh", "orbit rocket nasa"], labels=["space", "space"], k=5)
    assert report["queries"] == 1  # the query without a known word is left out, with a warning


def test_index_add_without_ids_never_replaces(tmp_path):
    docs = synthetic_docs(n_per_topic=5)
    idx = Index.build_docs([t for _, t in docs], name="n", store=tmp_path, config=TINY_DOCS)
    report = idx.add(["rocket orbit launch nasa", "engine brake tire"])
    assert (report.added, report.replaced, len(idx)) == (2, 0, 22)
    assert {"20", "21"} <= set(idx.retriever.metadata.ids())
