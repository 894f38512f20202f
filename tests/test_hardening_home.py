"""Issue 12, the index home: a bad home, a read-only home, damaged indexes, `remove`, options out of range.

Every case is an in-process CLI run (``test_cli.run``) on a copy of the
session's tiny index: one ``error:`` line and exit 1, or the command works.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval import DocsConfig, ImagesConfig, Index
from retrieval.errors import InputError
from test_cli import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path, built_docs):
    """``$RETRIEVAL_HOME`` (set by conftest) holding a copy of the tiny document index as ``tiny``."""
    store, name, _ = built_docs
    root = tmp_path / "home"
    shutil.copytree(store.path(name), root / "tiny")
    return root


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` with its bytes: equal snapshots = nothing created, changed or removed."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _one_error(err: str) -> str:
    """The single ``error:`` line of a command's stderr (no traceback)."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


# -- 1. the home is a file ----------------------------------------------------------------
HOME_COMMANDS = [["list"], ["list", "--json"], ["info", "tiny"], ["query", "tiny", "orbit rocket"],
                 ["remove", "tiny", "--yes"], ["upgrade", "tiny"], ["outliers", "tiny"],
                 ["index", "docs", "CORPUS", "--name", "x", "--epochs", "1"]]


@pytest.mark.parametrize("args", HOME_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_home_that_is_a_file_is_an_error_on_every_command(monkeypatch, capsys, tmp_path, docs_dir, args):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    monkeypatch.setenv("RETRIEVAL_HOME", str(blocker))
    args = [str(docs_dir) if a == "CORPUS" else a for a in args]
    code, out, err = run(monkeypatch, capsys, *args)
    line = _one_error(err)
    assert code == 1 and out == ""
    assert str(blocker) in line and "not a folder" in line and "RETRIEVAL_HOME" in line
    assert blocker.read_text() == "a file"


def test_home_below_a_file_and_index_dir_name_their_origin(monkeypatch, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(monkeypatch, capsys, "list", "--index-dir", blocker / "indexes")
    line = _one_error(err)
    assert code == 1 and str(blocker) in line and "--index-dir" in line and "not a folder" in line


# -- 2. a read-only home --------------------------------------------------------------------
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only for this process, as a read-only mount does (``EROFS``).

    Tests run as root in CI, where permission bits stop nothing: the write
    primitives themselves refuse every path under the folder (os.open for
    writing, mkdir, rename, unlink, open(..., "w"), access(W_OK)).
    """
    def make(root: Path) -> None:
        top = os.path.realpath(root)

        def inside(path, dir_fd=None) -> bool:
            path = os.fsdecode(os.fspath(path))
            if dir_fd is not None and not os.path.isabs(path):
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            real = os.path.realpath(path)
            return real == top or real.startswith(top + os.sep)

        def deny(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        real_open, real_io_open, real_access = os.open, io.open, os.access

        def fake_open(path, flags, mode=0o777, *, dir_fd=None):
            if flags & _WRITE_FLAGS and inside(path, dir_fd):
                deny(path)
            return real_open(path, flags, mode, dir_fd=dir_fd)

        def fake_io_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                deny(file)
            return real_io_open(file, mode, *args, **kwargs)

        def fake_access(path, mode, *args, **kwargs):
            if mode & os.W_OK and inside(path):
                return False
            return real_access(path, mode, *args, **kwargs)

        def guard(function, paths: int):
            def guarded(*args, **kwargs):
                if any(inside(a, kwargs.get("dir_fd", kwargs.get("src_dir_fd"))) for a in args[:paths]):
                    deny(args[0])
                return function(*args, **kwargs)
            return guarded

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_io_open)
        monkeypatch.setattr(builtins, "open", fake_io_open)
        monkeypatch.setattr(os, "access", fake_access)
        for name, paths in (("mkdir", 1), ("rmdir", 1), ("unlink", 1), ("remove", 1), ("rename", 2),
                            ("replace", 2), ("link", 2), ("symlink", 2), ("truncate", 1)):
            monkeypatch.setattr(os, name, guard(getattr(os, name), paths))

    return make


def test_the_read_only_fixture_refuses_writes(tmp_path, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "a").write_text("x")
    read_only(folder)
    for write in (lambda: (folder / "b").write_text("y"), lambda: (folder / "d").mkdir(),
                  lambda: os.open(folder / "c", os.O_RDWR | os.O_CREAT), lambda: (folder / "a").unlink(),
                  lambda: os.replace(folder / "a", folder / "e")):
        with pytest.raises(OSError) as info:
            write()
        assert info.value.errno == errno.EROFS
    assert (folder / "a").read_text() == "x" and sorted(p.name for p in folder.iterdir()) == ["a"]
    assert not os.access(folder, os.W_OK)


def test_reading_commands_work_on_a_read_only_home(monkeypatch, capsys, home, queries_dir, read_only):
    before = _snapshot(home)
    read_only(home)
    code, out, err = run(monkeypatch, capsys, "list", "--json")
    assert code == 0 and "tiny" in out, err
    code, out, err = run(monkeypatch, capsys, "info", "tiny")
    assert code == 0 and "bytes/item" in out, err
    code, out, err = run(monkeypatch, capsys, "query", "tiny", "orbit rocket nasa", "-k", "3", "--json")
    assert code == 0 and '"rank": 3' in out, err
    # evaluate reads the index and only records its result: the result is printed, the record is a warning.
    code, out, err = run(monkeypatch, capsys, "evaluate", "tiny", "--queries", queries_dir, "--labels-from-folders",
                         "-k", "5", "--json")
    assert code == 0, err
    assert '"precision@5"' in out
    warning = [line for line in err.splitlines() if line.startswith("warning:") and "not recorded" in line]
    assert len(warning) == 1 and str(home) in warning[0], err
    assert _snapshot(home) == before


@pytest.mark.parametrize("args", [
    ["remove", "tiny", "--yes"], ["upgrade", "tiny"], ["retrain", "tiny"], ["remove-items", "tiny", "--id", "0"],
    ["add", "tiny", "QUERIES"], ["sync", "tiny", "QUERIES"], ["index", "docs", "QUERIES", "--name", "new"],
    ["index", "docs", "QUERIES", "--name", "tiny", "--force"],
], ids=lambda a: " ".join(a[:2]))
def test_writers_on_a_read_only_home_give_one_error_naming_the_folder(monkeypatch, capsys, home, queries_dir,
                                                                      read_only, args):
    args = [str(queries_dir) if a == "QUERIES" else a for a in args]
    before = _snapshot(home)
    read_only(home)
    code, out, err = run(monkeypatch, capsys, *args)
    line = _one_error(err)
    assert code == 1, err
    assert str(home) in line and "not writable" in line and "read-only file system" in line.lower()
    assert _snapshot(home) == before


def _real_read_only(home: Path) -> list[str]:
    """A command prefix running under a truly read-only ``home`` (chmod, or a read-only bind mount as root)."""
    if os.geteuid() != 0:
        for path in [home, *home.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount namespaces: no real read-only folder to test on")
    return [unshare, "--mount", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(home)]


#: Runs CLI commands in one interpreter (one start-up): a JSON argument list an argument, "=== exit N" after each.
_SEVERAL = """
import json, sys
from retrieval import cli
for args in sys.argv[1:]:
    sys.argv = ["retrieval", *json.loads(args)]
    try:
        cli.main()
    except SystemExit as exc:
        for stream in (sys.stdout, sys.stderr):
            print(f"=== exit {exc.code}", file=stream, flush=True)
"""


def test_a_truly_read_only_home(tmp_path, home, queries_dir):
    """The same on a real read-only folder: the fake of the tests above matches the system's errors."""
    import json
    import re

    prefix = _real_read_only(home)
    commands = [["evaluate", "tiny", "--queries", str(queries_dir), "--labels-from-folders", "-k", "5", "--json"],
                ["upgrade", "tiny"]]
    try:
        env = dict(os.environ, RETRIEVAL_HOME=str(home), PYTHONPATH=str(ROOT), NO_COLOR="1", COLUMNS="200")
        done = subprocess.run([*prefix, sys.executable, "-c", _SEVERAL, *map(json.dumps, commands)], env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        for path in [home, *home.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    marker = re.compile(r"^=== exit (\S+)\n", re.M)
    outs, errs = marker.split(done.stdout)[::2], marker.split(done.stderr)[::2]
    assert marker.findall(done.stdout) == ["0", "1"], done.stderr
    assert '"precision@5"' in outs[0] and "not recorded" in errs[0], done.stderr
    assert "not writable" in _one_error(errs[1]) and str(home) in errs[1]


# -- 3. list with a damaged index ----------------------------------------------------------------
def test_list_shows_healthy_indexes_beside_a_damaged_one(monkeypatch, capsys, home):
    shutil.copytree(home / "tiny", home / "broken")
    (home / "broken" / "manifest.json").write_text("{ not json")
    shutil.copytree(home / "tiny", home / "cut")
    faiss = home / "cut" / "methods" / "ae" / "index.faiss"
    faiss.write_bytes(faiss.read_bytes()[:-10])
    monkeypatch.setenv("COLUMNS", "300")

    code, out, err = run(monkeypatch, capsys, "list")
    assert code == 0 and "Traceback" not in err
    assert "tiny" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err
    broken, cut = warnings
    assert "'broken'" in broken and "corrupt" in broken and "retrieval remove broken" in broken
    assert "'cut'" in cut and "index.faiss" in cut and "truncated" in cut and "--force" in cut

    import json

    code, out, err = run(monkeypatch, capsys, "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"broken", "cut", "tiny"}
    assert rows["tiny"]["error"] is None and rows["tiny"]["items"] == 120
    assert "corrupt" in rows["broken"]["error"] and "index.faiss" in rows["cut"]["error"]


# -- 4. info verifies the files --------------------------------------------------------------------
def test_info_reports_a_truncated_file(monkeypatch, capsys, home):
    faiss = home / "tiny" / "methods" / "ae" / "index.faiss"
    faiss.write_bytes(faiss.read_bytes()[:-10])
    for args in (["info", "tiny"], ["info", "tiny", "--json"]):
        code, out, err = run(monkeypatch, capsys, *args)
        line = _one_error(err)
        assert code == 1 and out == ""
        assert "methods/ae/index.faiss" in line and "truncated" in line and "--force" in line


# -- 5. remove asks ----------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_remove_refuses_without_yes_when_it_cannot_ask(monkeypatch, capsys, home):
    before = _snapshot(home)
    code, _, err = run(monkeypatch, capsys, "remove", "tiny")
    line = _one_error(err)
    assert code == 1 and "--yes" in line and "tiny" in line
    assert _snapshot(home) == before


@pytest.mark.parametrize("answer, removed", [("n\n", False), ("\n", False), ("y\n", True)])
def test_remove_asks_on_a_terminal(monkeypatch, capsys, home, answer, removed):
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    code, out, err = run(monkeypatch, capsys, "remove", "tiny")
    assert "delete index 'tiny'" in out + err
    assert (home / "tiny").exists() is not removed
    assert code == (0 if removed else 1)
    if not removed:
        assert "nothing removed" in _one_error(err)


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_remove_with_yes_does_not_ask(monkeypatch, capsys, home, flag):
    code, _, err = run(monkeypatch, capsys, "remove", "tiny", flag)
    assert code == 0 and "removed tiny" in err and not (home / "tiny").exists()


def test_remove_of_a_missing_index_does_not_ask(monkeypatch, capsys, home):
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    code, out, err = run(monkeypatch, capsys, "remove", "ghost")
    assert code == 1 and "no index named 'ghost'" in _one_error(err) and "delete" not in out


# -- 6. options out of range -----------------------------------------------------------------------
DOCS = ["index", "docs", "CORPUS", "--name", "new"]
IMAGES = ["index", "images", "CORPUS", "--name", "new"]
QUERY = ["query", "tiny", "orbit rocket"]
EVALUATE = ["evaluate", "tiny", "--queries", "QUERIES", "--labels-from-folders"]
BAD_OPTIONS = [
    (QUERY, "--radius", "-1"), (QUERY, "--shortlist", "0"), (QUERY, "-k", "0"),
    (EVALUATE, "--shortlist", "0"), (EVALUATE, "-k", "0"), (EVALUATE, "--limit", "0"),
    (["outliers", "tiny"], "-k", "0"), (["plot", "tiny"], "--max-items", "0"), (["plot", "tiny"], "--epochs", "0"),
    (DOCS, "--vocab-size", "0"), (DOCS, "--code-dim", "0"), (DOCS, "--hidden", ""), (DOCS, "--hidden", "16,0"),
    (DOCS, "--epochs", "0"), (DOCS, "--noise", "1"), (DOCS, "--noise", "-0.5"), (DOCS, "--short-views", "1.5"),
    (DOCS, "--neighbours", "-5"), (DOCS, "--neighbour-weight", "5"), (DOCS, "--bits", "12"),
    (DOCS, "--binary-epochs", "0"), (DOCS, "--baseline-dim", "0"), (DOCS, "--seed", "-1"),
    (IMAGES, "--whiten", "-1"), (IMAGES, "--whiten", "2"), (IMAGES, "--filters", ""), (IMAGES, "--filters", "4,-8"),
    (IMAGES, "--augment", "-0.1"), (IMAGES, "--code-dim", "0"), (IMAGES, "--epochs", "0"),
    (IMAGES, "--patience", "0"), (IMAGES, "--size", "4"), (IMAGES, "--limit", "0"), (IMAGES, "--baseline-dim", "0"),
    (IMAGES, "--noise", "1.5"), (IMAGES, "--seed", "-3"),
    (["index", "images", "http://127.0.0.1:9/", "--name", "new"], "--max-pages", "0"),
    (["crawl", "http://127.0.0.1:9/", "--out", "OUT"], "--max-pages", "0"),
    (["crawl", "http://127.0.0.1:9/", "--out", "OUT"], "--concurrency", "0"),
    (["crawl", "http://127.0.0.1:9/", "--out", "OUT"], "--timeout", "0"),
    (["serve", "tiny"], "--port", "70000"), (["serve", "tiny"], "--max-upload-mb", "0"),
]


@pytest.mark.parametrize("command, option, value", BAD_OPTIONS, ids=lambda x: x if isinstance(x, str) else x[0])
def test_options_out_of_range(monkeypatch, capsys, tmp_path, home, queries_dir, command, option, value):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    args = [{"CORPUS": str(corpus), "QUERIES": str(queries_dir), "OUT": str(tmp_path / "out")}.get(a, a)
            for a in command]
    import uvicorn

    def never_serve(*args, **kwargs):
        raise AssertionError("the server started despite the bad option")

    monkeypatch.setattr(uvicorn, "run", never_serve)  # a missed check must fail the test, not hang it
    before = _snapshot(tmp_path)
    code, out, err = run(monkeypatch, capsys, *args, option, value)
    line = _one_error(err)
    assert code == 1 and out == ""
    # The option as typed (or, for the crawler's own limits, its field name) and the bad value.
    assert option in line or option.lstrip("-").replace("-", "_") in line, line
    assert repr(value) in line or f" {value}" in line, line
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("config, field, value, option", [
    (DocsConfig, "neighbour_weight", 5.0, "--neighbour-weight"), (DocsConfig, "neighbours", -5, "--neighbours"),
    (DocsConfig, "baseline_dim", 0, "--baseline-dim"), (DocsConfig, "hidden", (), "--hidden"),
    (DocsConfig, "batch_size", 0, "batch_size"), (DocsConfig, "learning_rate", 0.0, "learning_rate"),
    (DocsConfig, "code_dim", 2.5, "--code-dim"), (DocsConfig, "epochs", True, "--epochs"),
    (ImagesConfig, "whiten", -1.0, "--whiten"), (ImagesConfig, "filters", (), "--filters"),
    (ImagesConfig, "limit", 0, "--limit"),
])
def test_configs_refuse_values_out_of_range(config, field, value, option):
    with pytest.raises(InputError, match=option):
        config(**{field: value})


def test_python_search_refuses_a_bad_shortlist_and_radius(home):
    idx = Index.open("tiny", home)
    try:
        with pytest.raises(InputError, match="--shortlist"):
            idx.search("orbit rocket", shortlist=0)
        with pytest.raises(InputError, match="--radius"):
            idx.search("orbit rocket", radius=-1)
    finally:
        idx.close()
