"""Crash safety, writer locks and checksums of index folders (issue #5)."""
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from retrieval import Store, build_docs_index
from retrieval.errors import IndexFormatError, IndexLocked, RetrievalWarning
from retrieval.search import Retriever
from retrieval.storage import FORMAT_VERSION, manifest_checksum, verify_index
from conftest import FIRST_SEGMENT, TINY_DOCS, synthetic_docs, write_corpus

REPO = Path(__file__).resolve().parent.parent


def _copy(built_docs, tmp_path) -> tuple[Store, str]:
    """A private copy of the shared tiny index (the session fixture stays untouched)."""
    store, name, _ = built_docs
    copy = Store(tmp_path / "home")
    shutil.copytree(store.path(name), copy.path(name))
    return copy, name


def _in_thread(fn):
    """Run ``fn`` in another thread; return what it raised (or None)."""
    out = []

    def run():
        try:
            fn()
            out.append(None)
        except BaseException as exc:  # noqa: BLE001
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    return out[0]


def _title(store: Store, name: str, pos: int = 0) -> str:
    r = Retriever(name, store)
    try:
        return r.metadata.rows([pos])[0]["title"]
    finally:
        r.close()


# -- locks -----------------------------------------------------------------------
def test_second_writer_in_another_thread_is_refused(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    with store.lock(name, purpose="build"):
        with store.lock(name):  # re-entrant in the holding thread
            pass
        attempts = {
            "lock": lambda: store.lock(name).__enter__(),
            "writer": lambda: store.writer(name, force=True).__enter__(),
            "updater": lambda: store.updater(name).__enter__(),
            "update_manifest": lambda: store.update_manifest(name, lambda m: None),
            "remove": lambda: store.remove(name),
            # fails before any training, not at the end of it
            "build": lambda: build_docs_index(tmp_path / "nowhere", name, TINY_DOCS, store=store, force=True),
        }
        for what, attempt in attempts.items():
            exc = _in_thread(attempt)
            assert isinstance(exc, IndexLocked), (what, exc)
            assert f"pid {os.getpid()}" in str(exc) and "build started" in str(exc)
            assert "wait for it to finish; a crashed writer's lock is released automatically" in str(exc)
    assert _in_thread(lambda: store.update_manifest(name, lambda m: None)) is None  # free again
    assert not store.lock_path(name).exists()  # released locks leave no file


def test_lock_of_a_killed_process_is_free(tmp_path):
    store = Store(tmp_path / "home")
    code = ("import sys, time\nfrom retrieval.storage import Store\n"
            "held = Store(sys.argv[1]).lock('x', purpose='build')\nheld.__enter__()\nprint('locked', flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(store.root)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLocked, match=rf"'x' .* locked by pid {proc.pid} on .*build started 20"):
            with store.lock("x"):
                pass
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs in the holder
        proc.wait()
    assert store.lock_path("x").exists()  # the holder's record stays behind ...
    with pytest.warns(RetrievalWarning, match=rf"took over the lock file .* pid {proc.pid}.*killed or crashed"):
        with store.lock("x"):  # ... but the kernel released the lock itself
            pass


def test_stale_lock_file_from_a_dead_pid_is_taken_over(tmp_path):
    store = Store(tmp_path / "home")
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.root.mkdir(parents=True)
    store.lock_path("x").write_text(json.dumps({"pid": dead.pid, "host": "h", "purpose": "build",
                                                "started": "2020-01-01T00:00:00+00:00"}))
    with pytest.warns(RetrievalWarning, match=rf"pid {dead.pid} on h \(build started 2020-01-01"):
        with store.lock("x"):
            assert json.loads(store.lock_path("x").read_text())["pid"] == os.getpid()
    assert not store.lock_path("x").exists()


# -- checksums -------------------------------------------------------------------
def test_built_index_records_checksums(built_docs):
    store, name, _ = built_docs
    m = store.read_manifest(name)
    assert m["checksum"] == manifest_checksum(m)
    assert {f"{FIRST_SEGMENT}/items.sqlite", "methods/ae/encoder.keras", f"{FIRST_SEGMENT}/methods/ae/index.faiss",
            "vectorizer/idf.npy"} <= set(m["files"])
    assert "manifest.json" not in m["files"]
    info = m["files"][f"{FIRST_SEGMENT}/items.sqlite"]
    assert info["bytes"] == (store.path(name) / FIRST_SEGMENT / "items.sqlite").stat().st_size
    assert len(info["sha256"]) == 64


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path) -> None:
    m = json.loads(path.read_text())
    m["counts"]["items"] = 999
    path.write_text(json.dumps(m))


TAMPERING = {
    "flipped byte": (lambda f: _flip(f / "methods/ae/encoder.keras"),
                     "methods/ae/encoder.keras was modified or truncated (sha256 mismatch); "
                     "the index may have been tampered with: rebuild it with --force"),
    "truncated": (lambda f: os.truncate(f / FIRST_SEGMENT / "methods/ae/index.faiss", 10),
                  f"{FIRST_SEGMENT}/methods/ae/index.faiss was modified or truncated (10 bytes"),
    "deleted": (lambda f: (f / "vectorizer/idf.npy").unlink(), "vectorizer/idf.npy is missing"),
    "injected": (lambda f: (f / "methods/ae/evil.py").write_text("import os"),
                 "unexpected file methods/ae/evil.py"),
    "manifest edited": (lambda f: _edit_manifest(f / "manifest.json"),
                        "manifest.json was modified after the index was written (checksum mismatch)"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_index_is_refused(built_docs, tmp_path, case):
    store, name = _copy(built_docs, tmp_path)
    tamper, message = TAMPERING[case]
    tamper(store.path(name))
    with pytest.raises(IndexFormatError, match=re.escape(message)):
        Retriever(name, store)
    if case == "flipped byte":
        Retriever(name, store, verify=False).close()  # the documented opt-out


def test_checksums_are_mandatory_from_format_2(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    path = store.path(name) / "manifest.json"
    m = json.loads(path.read_text())
    assert m["format_version"] == FORMAT_VERSION
    del m["files"], m["checksum"]
    path.write_text(json.dumps(m))
    # Format 1 allowed this (indexes written before checksums existed); format 2 does not,
    # so stripping them is not a way around verification.
    with pytest.raises(IndexFormatError, match="checksum was removed"):
        Retriever(name, store)
    m["format_version"] = 1  # as written before checksums existed: loads, unverified
    path.write_text(json.dumps(m))
    assert Retriever(name, store).search("orbit rocket launch", k=3)
    m["files"] = {}  # a file list without its checksum is an edit, not an old index
    path.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="checksum was removed"):
        Retriever(name, store)


def test_update_manifest_keeps_the_index_verifiable(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    store.update_manifest(name, lambda m: m.update(evaluation={"k": 10}))
    r = Retriever(name, store)
    assert r.manifest["evaluation"] == {"k": 10} and r.manifest["checksum"] == manifest_checksum(r.manifest)
    r.close()
    _edit_manifest(store.path(name) / "manifest.json")
    with pytest.raises(IndexFormatError, match="manifest.json was modified"):
        store.update_manifest(name, lambda m: None)  # would otherwise bless the edit


# -- updater -----------------------------------------------------------------------
def _retitle(folder: Path, title: str) -> None:
    con = sqlite3.connect(folder / FIRST_SEGMENT / "items.sqlite")
    con.execute("UPDATE items SET title = ? WHERE pos = 0", (title,))
    con.commit()
    con.close()


def test_updater_failure_leaves_the_old_state(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    before = _title(store, name)
    with pytest.raises(RuntimeError):
        with store.updater(name) as folder:
            _retitle(folder, "changed")  # in place: a hard-linked copy would change the live index too
            raise RuntimeError("failed mid-update")
    assert _title(store, name) == before
    assert sorted(os.listdir(store.root)) == [name]


def test_updater_success_is_visible_and_verifiable(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    with store.updater(name) as folder:
        _retitle(folder, "changed")
        (folder / "methods" / "ae" / "added.bin").write_bytes(b"new file")
    assert _title(store, name) == "changed"  # Retriever verifies every file
    assert "methods/ae/added.bin" in store.read_manifest(name)["files"]
    assert sorted(os.listdir(store.root)) == [name]


def test_updater_refuses_a_corrupt_index(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    _flip(store.path(name) / FIRST_SEGMENT / "items.sqlite")
    with pytest.raises(IndexFormatError, match="items.sqlite was modified"):
        with store.updater(name):
            pass  # pragma: no cover
    assert sorted(os.listdir(store.root)) == [name]


def test_writer_needs_a_manifest(tmp_path):
    store = Store(tmp_path / "home")
    with pytest.raises(IndexFormatError, match="without writing one"):
        with store.writer("x"):
            pass
    assert not store.exists("x")


# -- crashes inside the swap ---------------------------------------------------------
def _half_swapped(store: Store, name: str) -> None:
    """What a writer killed between its two renames leaves."""
    new = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=store.root))
    (new / "manifest.json").write_text("{}")
    old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=store.root))
    os.rename(store.path(name), old / "index")


def test_crash_between_the_two_renames_is_recovered(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    _half_swapped(store, name)
    assert not store.path(name).exists()
    with pytest.warns(RetrievalWarning, match="restored the previous version"):
        hits = Retriever(name, store).search("orbit rocket launch", k=3)
    assert hits and sorted(os.listdir(store.root)) == [name]  # leftovers deleted under the lock
    _half_swapped(store, name)
    with pytest.warns(RetrievalWarning, match="restored"):
        assert store.names() == [name]


def test_failed_second_rename_rolls_back_at_once(built_docs, tmp_path, monkeypatch):
    store, name = _copy(built_docs, tmp_path)
    renames = []

    def rename(src, dst, _rename=os.rename):
        renames.append(dst)
        if len(renames) == 2:
            raise OSError("disk full")
        _rename(src, dst)

    with pytest.raises(OSError, match="disk full"):
        with store.updater(name) as folder:
            _retitle(folder, "changed")
            monkeypatch.setattr(os, "rename", rename)
    monkeypatch.undo()
    assert _title(store, name) != "changed" and sorted(os.listdir(store.root)) == [name]


def test_crash_after_the_swap_keeps_the_new_state(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=store.root))
    shutil.copytree(store.path(name), old / "index")
    _retitle(old / "index", "old state")
    assert _title(store, name) != "old state"
    with store.lock(name):  # the next writer cleans up
        pass
    assert sorted(os.listdir(store.root)) == [name]


def test_remove_never_leaves_a_half_deleted_index(built_docs, tmp_path):
    store, name = _copy(built_docs, tmp_path)
    store.remove(name)
    assert os.listdir(store.root) == []


def _kill_test():
    spec = importlib.util.spec_from_file_location("kill_test", REPO / "benchmarks" / "kill_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builds_killed_at_random_moments(tmp_path):
    kill_test = _kill_test()
    corpora = []
    for folder, n, seed in (("a", 30, 0), ("b", 20, 3)):
        write_corpus(tmp_path / folder, synthetic_docs(n_per_topic=n, seed=seed))
        corpora.append((tmp_path / folder, 4 * n))
    log = tmp_path / "builds.log"
    # widen: 0.3 s after each rename, so some of the 10 kills land inside the swap
    report = kill_test.kill_loop(tmp_path / "home", tuple(corpora), points=10, seed=0, widen=0.3, log=log)
    assert report["outcomes"]["broken"] == 0, (report, log.read_text()[-3000:])
    assert report["outcomes"]["old"] + report["outcomes"]["new"] == 10
