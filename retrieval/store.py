"""Index folders on disk: home resolution, atomic writes, manifest, metadata.

An index is a directory ``HOME/NAME/`` holding ``manifest.json``, the SQLite
item metadata ``items.sqlite`` and one sub-folder per method with its encoder
and FAISS file. Nothing is pickled. A build writes into a hidden temporary
folder beside the target and renames it into place only when complete, so an
interrupted build leaves the previous index as it was.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import IndexExists, IndexFormatError, IndexNotFound, InputError
from .items import Item

#: Bumped whenever the folder layout changes incompatibly; an index written
#: by a newer version is refused with a message instead of misread.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "items.sqlite"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def index_home(index_dir: str | Path | None = None) -> Path:
    """Resolve where indexes live.

    Order: the explicit ``index_dir``; the ``RETRIEVAL_HOME`` environment
    variable; the ``indexes/`` folder of a source checkout (beside the
    package); ``~/.local/share/retrieval/indexes`` for a regular install.
    """
    if index_dir:
        return Path(index_dir).expanduser()
    if os.environ.get("RETRIEVAL_HOME"):
        return Path(os.environ["RETRIEVAL_HOME"]).expanduser()
    checkout = Path(__file__).resolve().parent.parent / "indexes"
    if checkout.is_dir():
        return checkout
    return Path.home() / ".local" / "share" / "retrieval" / "indexes"


class Store:
    """The collection of indexes under one home folder.

    Args:
        root: The home folder; see :func:`index_home` for the default.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = index_home(root)

    def path(self, name: str) -> Path:
        """Folder of index ``name`` (validated, not necessarily existing)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InputError(f"invalid index name {name!r}; use letters, digits, '.', '_' or '-' "
                             "(starting with a letter or digit)")
        return self.root / name

    def names(self) -> list[str]:
        """Names of the complete indexes, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())

    def exists(self, name: str) -> bool:
        """True when a folder for ``name`` exists."""
        return self.path(name).exists()

    def require(self, name: str) -> Path:
        """Return the folder of an existing index or raise :class:`IndexNotFound`."""
        path = self.path(name)
        if not (path / MANIFEST).exists():
            known = ", ".join(self.names()) or "none"
            raise IndexNotFound(f"no index named {name!r} in {self.root} (known: {known}); "
                                f"build it with 'retrieval index docs|images SOURCE --name {name}'")
        return path

    def check_new(self, name: str, force: bool = False) -> Path:
        """Raise :class:`IndexExists` unless ``name`` is free or ``force`` is set."""
        target = self.path(name)
        if target.exists() and not force:
            raise IndexExists(f"index {name!r} already exists in {self.root}; "
                              "pass --force to replace it or choose another --name")
        return target

    @contextmanager
    def writer(self, name: str, force: bool = False) -> Iterator[Path]:
        """Build an index in a temporary folder, then move it into place.

        Args:
            name: Index name.
            force: Replace an existing index of that name.

        Yields:
            The temporary folder to write into.

        Raises:
            IndexExists: ``name`` exists and ``force`` is false.
        """
        target = self.check_new(name, force)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
            os.rename(target, old / "index")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def read_manifest(self, name: str) -> dict:
        """Read and check ``manifest.json`` of index ``name``."""
        return read_manifest(self.require(name))

    def update_manifest(self, name: str, update: Callable[[dict], None]) -> dict:
        """Apply ``update`` to the manifest and write it back atomically."""
        folder = self.require(name)
        manifest = read_manifest(folder)
        update(manifest)
        write_json_atomic(folder / MANIFEST, manifest)
        return manifest

    def remove(self, name: str) -> None:
        """Delete index ``name``."""
        shutil.rmtree(self.require(name))

    def disk_usage(self, name: str) -> dict[str, int]:
        """Bytes on disk per top-level entry of the index folder."""
        folder = self.require(name)
        usage = {}
        for entry in sorted(folder.iterdir()):
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            usage[entry.name] = sum(p.stat().st_size for p in files)
        return usage


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a sibling temp file, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_manifest(folder: Path) -> dict:
    """Read ``folder/manifest.json``, checking its JSON and format version."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        version = manifest["format_version"]
    except FileNotFoundError:
        raise IndexNotFound(f"{folder} has no {MANIFEST}; it is not an index") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{path} is corrupt ({type(exc).__name__}: {exc}); "
                               "rebuild the index with --force") from None
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(f"{folder.name} was written by a newer retrieval (index format {version}, "
                               f"this version reads up to {FORMAT_VERSION}); upgrade retrieval or rebuild the index")
    return manifest


_COLUMNS = ("id", "title", "label", "path", "url", "length", "snippet", "extra")


def write_metadata(folder: Path, items: Sequence[Item], snippets: Sequence[str]) -> None:
    """Write the item table; row ``i`` describes FAISS position ``i``."""
    con = sqlite3.connect(folder / METADATA)
    try:
        con.execute("CREATE TABLE items (pos INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT, "
                    "label TEXT, path TEXT, url TEXT, length INTEGER, snippet TEXT, extra TEXT)")
        con.executemany(
            "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
            ((i, it.id, it.title, it.label, it.path, it.url, len(it.text), snip, json.dumps(it.extra))
             for i, (it, snip) in enumerate(zip(items, snippets))))
        con.commit()
    finally:
        con.close()


class Metadata:
    """Read access to ``items.sqlite`` (one connection, kept open)."""

    def __init__(self, folder: Path) -> None:
        path = folder / METADATA
        if not path.exists():
            raise IndexFormatError(f"{path} is missing; rebuild the index")
        # Read-only URI: a query must never modify an index.
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def rows(self, positions: Sequence[int]) -> list[dict]:
        """Metadata of the given positions, in the given order."""
        positions = [int(p) for p in positions]
        if not positions:
            return []
        marks = ",".join("?" * len(positions))
        found = {row[0]: row[1:] for row in self._con.execute(
            f"SELECT pos, {', '.join(_COLUMNS)} FROM items WHERE pos IN ({marks})", positions)}
        out = []
        for pos in positions:
            values = dict(zip(_COLUMNS, found[pos]))
            values["extra"] = json.loads(values["extra"] or "{}")
            values["position"] = pos
            out.append(values)
        return out

    def position(self, item_id: str) -> int:
        """Position of the item with id ``item_id``."""
        row = self._con.execute("SELECT pos FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise InputError(f"no item with id {item_id!r} in this index; "
                             "ids are shown by 'retrieval query ... --json'")
        return row[0]

    def labels(self) -> np.ndarray:
        """Labels of all items in position order (``None`` where unknown)."""
        return np.array([r[0] for r in self._con.execute("SELECT label FROM items ORDER BY pos")], dtype=object)

    def close(self) -> None:
        """Close the connection."""
        self._con.close()
