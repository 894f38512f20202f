"""The item table ``items.sqlite`` of a segment: every SQL statement of the project lives here.

Row ``pos`` describes position ``pos`` of every method's index in the same
segment; a segment's table never changes once written (removed items are
marked in a separate file, see :mod:`retrieval.storage.segments`). Item ids
are the stable, user-facing identifiers; positions are renumbered when
segments are compacted.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ItemNotFound
from ..items import Item

COLUMNS = ("id", "title", "label", "path", "url", "length", "snippet", "extra")
_SCHEMA = ("CREATE TABLE items (pos INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT, "
           "label TEXT, path TEXT, url TEXT, length INTEGER, snippet TEXT, extra TEXT)")
#: Indexes of the columns filters select on, so that a filter's first query reads the rows it keeps
#: rather than every row (:meth:`Metadata.filtered`). Tables written before them have none and
#: are scanned instead: the same answers, no format change (a reader of either kind reads both).
_INDEXES = ("CREATE INDEX IF NOT EXISTS items_label ON items (label)",
            "CREATE INDEX IF NOT EXISTS items_path ON items (path)")


class ConditionError(Exception):
    """SQLite refused a user's condition (:meth:`Metadata.matching`); the message is SQLite's."""


def create(path: Path) -> None:
    """Create an empty item table at ``path``."""
    con = sqlite3.connect(path)
    try:
        con.execute(_SCHEMA)
        for statement in _INDEXES:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


def _finish(con: sqlite3.Connection) -> None:
    """Count the rows per label and path for SQLite's planner, then commit (the table is complete).

    ``ANALYZE`` lets a filter on a label most items carry scan the table
    rather than follow the label index to each row.
    """
    con.execute("ANALYZE main")
    con.commit()


def _insert(con: sqlite3.Connection, start: int, items: Sequence[Item], snippets: Sequence[str]) -> None:
    con.executemany(
        "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
        ((start + i, it.id, it.title, it.label, it.path, it.url, len(it.text), snip, json.dumps(it.extra))
         for i, (it, snip) in enumerate(zip(items, snippets))))


def write(path: Path, items: Sequence[Item], snippets: Sequence[str]) -> None:
    """Create the table of a new segment holding ``items`` at positions 0, 1, ...

    Raises:
        InputError: Two items share an id.
    """
    create(path)
    con = sqlite3.connect(path)
    try:
        try:
            _insert(con, 0, items, snippets)
        except sqlite3.IntegrityError:
            raise InputError("two items to add share an id; give every item a distinct id") from None
        _finish(con)
    finally:
        con.close()


class TableWriter:
    """The table of a new segment, written a batch of items at a time (a build streams its items here).

    Args:
        path: The new ``items.sqlite`` (created now).

    Attributes:
        count: Items written so far (their positions are 0 .. count - 1).
    """

    def __init__(self, path: Path) -> None:
        create(path)
        self._con = sqlite3.connect(path)
        self.count = 0

    def extend(self, items: Sequence[Item], snippets: Sequence[str]) -> None:
        """Append ``items`` at the next positions.

        Raises:
            InputError: An item shares an id with one written before.
        """
        try:
            _insert(self._con, self.count, items, snippets)
        except sqlite3.IntegrityError:
            raise InputError("two items to add share an id; give every item a distinct id") from None
        self.count += len(items)

    def close(self) -> None:
        """Commit and close (once the last batch is in)."""
        if self._con is not None:
            _finish(self._con)
            self._con.close()
            self._con = None


def copy_live(path: Path, sources: Sequence[tuple[Path, np.ndarray]]) -> None:
    """Create the table of a merged segment: the rows of ``sources`` not removed, renumbered densely.

    One statement per source inside one transaction; the rows are never
    decoded in Python.

    Args:
        path: The new ``items.sqlite``.
        sources: ``(items.sqlite of a segment, its removed positions)``, in order.

    Raises:
        IndexFormatError: Two live rows share an id (the segments are inconsistent).
    """
    create(path)
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TEMP TABLE removed (pos INTEGER PRIMARY KEY)")
        start = 0
        for number, (source, removed) in enumerate(sources):
            # A plain path: a "file:...?mode=ro" URI here depends on how SQLite was
            # compiled (TensorFlow, imported first, brings one without URI names).
            con.execute(f"ATTACH DATABASE ? AS src{number}", (str(source),))
            con.execute("DELETE FROM removed")
            con.executemany("INSERT INTO removed VALUES (?)", ((int(p),) for p in removed))
            columns = ", ".join(COLUMNS)
            try:
                con.execute(f"INSERT INTO items (pos, {columns}) SELECT ? + ROW_NUMBER() OVER (ORDER BY pos) - 1, "
                            f"{columns} FROM src{number}.items WHERE pos NOT IN (SELECT pos FROM removed) "
                            "ORDER BY pos", (start,))
            except sqlite3.IntegrityError:
                raise IndexFormatError(f"{source} holds an id another segment holds too; "
                                       "rebuild the index with --force") from None
            start = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        _finish(con)
        for number in range(len(sources)):
            con.execute(f"DETACH DATABASE src{number}")
    finally:
        con.close()


def prefix_end(prefix: str) -> str | None:
    """The least string after every string that starts with ``prefix`` (``None``: there is none).

    In code point order, the strings starting with ``prefix`` are exactly
    those in ``[prefix, prefix_end(prefix))``: ``prefix`` with its last
    character below U+10FFFF incremented and the characters after it dropped
    (the surrogates, which UTF-8 cannot hold, are skipped).
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop())
        if code < 0x10FFFF:
            code += 1
            return "".join(chars) + chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)
    return None


#: Placeholders per ``IN (...)`` query: below SQLite's limit on bound variables.
_CHUNK = 500


#: SQL functions a user's filter condition may not call (Python's sqlite3 keeps
#: extension loading off; refused here too, should a build turn it on).
_DENIED_FUNCTIONS = frozenset({"load_extension"})
#: Bytes of an item table a filter's connection maps into memory (address space, not memory used).
_FILTER_MMAP_BYTES = 1 << 30
#: Longest string or blob a filter condition may build (``zeroblob(1e9)``, ``printf('%.*c', ...)``).
_FILTER_MAX_LENGTH = 1_000_000


def _authorize_filter(action: int, arg1, arg2, database, source) -> int:
    """SQLite authorizer of filter conditions: read the ``items`` table and call functions, nothing else.

    Every other action (a write, ``ATTACH``, ``PRAGMA``, another table such as
    ``sqlite_master``, a recursive query, a transaction) is refused when the
    statement is prepared, before it runs.
    """
    if action == sqlite3.SQLITE_SELECT:
        return sqlite3.SQLITE_OK
    # SQLite names no database when it reads a table for a constant subexpression (count(*), zeroblob()).
    if action == sqlite3.SQLITE_READ and arg1 == "items" and database in ("main", None):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() not in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


class Metadata:
    """Read access to ``items.sqlite`` (one read-only connection, kept open)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise IndexFormatError(f"{path} is missing; rebuild the index")
        # Read-only URI: a query must never modify an index.
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._filter_con: sqlite3.Connection | None = None
        self.path = path

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def rows(self, positions: Sequence[int] | None = None) -> list[dict]:
        """Metadata of the given positions in the given order (all rows, in position order, for ``None``)."""
        if positions is None:
            cur = self._con.execute(f"SELECT pos, {', '.join(COLUMNS)} FROM items ORDER BY pos")
            return [self._row(row[0], row[1:]) for row in cur]
        positions = [int(p) for p in positions]
        if not positions:
            return []
        found = {}
        for start in range(0, len(positions), _CHUNK):
            chunk = positions[start:start + _CHUNK]
            found.update((row[0], row[1:]) for row in self._con.execute(
                f"SELECT pos, {', '.join(COLUMNS)} FROM items WHERE pos IN ({','.join('?' * len(chunk))})", chunk))
        return [self._row(pos, found[pos]) for pos in positions]

    @staticmethod
    def _row(pos: int, values) -> dict:
        row = dict(zip(COLUMNS, values))
        row["extra"] = json.loads(row["extra"] or "{}")
        row["position"] = pos
        return row

    def position(self, item_id: str) -> int:
        """Position of the item with id ``item_id``."""
        row = self._con.execute("SELECT pos FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise ItemNotFound(f"no item with id {item_id!r} in this index; "
                             "ids are shown by 'retrieval query ... --json'")
        return row[0]

    def find(self, ids: Sequence[str]) -> list[dict]:
        """The rows of the given ids that exist (any order)."""
        ids = list(dict.fromkeys(ids))
        out = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            out += [self._row(row[0], row[1:]) for row in self._con.execute(
                f"SELECT pos, {', '.join(COLUMNS)} FROM items WHERE id IN ({','.join('?' * len(chunk))})", chunk)]
        return out

    def local_position(self, item_id: str) -> int | None:
        """Position of the item with id ``item_id`` in this table (``None``: not here)."""
        row = self._con.execute("SELECT pos FROM items WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else row[0]

    def prefixed(self, prefixes: Sequence[str]) -> np.ndarray:
        """Positions of the rows whose path or id starts with one of ``prefixes``, sorted."""
        found: set[int] = set()
        for prefix in prefixes:
            # substr() rather than LIKE: no wildcard in a path needs escaping.
            found.update(row[0] for row in self._con.execute(
                "SELECT pos FROM items WHERE substr(coalesce(path, ''), 1, length(?1)) = ?1 "
                "OR substr(id, 1, length(?1)) = ?1", (prefix,)))
        return np.array(sorted(found), dtype=np.int64)

    def label_counts(self, removed: np.ndarray | None = None) -> dict[str, int]:
        """How many rows carry each label, the ``removed`` positions left out."""
        counts = dict(self._con.execute("SELECT label, COUNT(*) FROM items WHERE label IS NOT NULL GROUP BY label"))
        for label in self.labels_at(removed if removed is not None else []):
            if label is not None:
                counts[label] -= 1
        return {label: n for label, n in counts.items() if n}

    def labels_at(self, positions) -> list:
        """The labels of the given positions, in order."""
        positions = [int(p) for p in positions]
        found = {}
        for start in range(0, len(positions), _CHUNK):
            chunk = positions[start:start + _CHUNK]
            found.update(self._con.execute(
                f"SELECT pos, label FROM items WHERE pos IN ({','.join('?' * len(chunk))})", chunk))
        return [found[p] for p in positions]

    def ids(self) -> list[str]:
        """Every item id, in position order."""
        return [r[0] for r in self._con.execute("SELECT id FROM items ORDER BY pos")]

    def labels(self) -> np.ndarray:
        """Labels of all items in position order (``None`` where unknown)."""
        return np.array([r[0] for r in self._con.execute("SELECT label FROM items ORDER BY pos")], dtype=object)

    def _guarded(self) -> sqlite3.Connection:
        """The connection of user filter conditions: read-only, ``query_only``, limits, :func:`_authorize_filter`."""
        if self._filter_con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            con.execute("PRAGMA query_only = ON")  # before the authorizer, which refuses pragmas
            # Read through a memory map: a filter that follows an index to many rows reads them
            # in place rather than by one system call per page missing from SQLite's small cache.
            con.execute(f"PRAGMA mmap_size = {_FILTER_MMAP_BYTES}")
            con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
            con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _FILTER_MAX_LENGTH)
            con.set_authorizer(_authorize_filter)
            self._filter_con = con
        return self._filter_con

    def matching(self, condition: str, params: dict, seconds: float) -> np.ndarray:
        """Positions of the rows for which the SQL boolean ``condition`` holds, sorted.

        ``condition`` may come from a user: it runs on its own read-only
        connection whose authorizer lets a statement read the ``items`` table
        and call functions only, and it is stopped after ``seconds``.

        Args:
            condition: An SQL expression over the columns of ``items`` (:data:`COLUMNS`).
            params: Its named parameters (``:name``).
            seconds: Time limit.

        Raises:
            ConditionError: The condition is not valid SQL, reads something else,
                misses a parameter or ran out of time (``interrupted``); SQLite's message.
        """
        return self.filtered(where=condition, params=params, seconds=seconds)

    def filtered(self, labels: Sequence[str] = (), prefixes: Sequence[str] = (), where: str | None = None,
                 params: dict | None = None, seconds: float = 5.0) -> np.ndarray:
        """Positions of the rows with one of ``labels``, a path starting with one of ``prefixes``
        and for which ``where`` holds (the parts given, ANDed), sorted.

        One statement, so SQLite reads the kept rows through the indexes on
        ``label`` and ``path`` (:data:`_INDEXES`) when a part names them: a
        path prefix is a range of the ``path`` index, a label an equality;
        only the positions come back. ``where`` runs as in :meth:`matching`.

        Args:
            labels: Keep these labels (any).
            prefixes: Keep paths starting with one of these (any; non-empty strings).
            where: A user's SQL condition over the columns of ``items``; it must
                not close more parentheses than it opens (the caller checks).
            params: The named parameters of ``where`` (none starts with ``_``).
            seconds: Time limit.

        Raises:
            ConditionError: As :meth:`matching`.
        """
        terms, values = [], dict(params or {})
        if labels:
            for i, label in enumerate(labels):
                values[f"_label{i}"] = label
            terms.append(f"label IN ({', '.join(f':_label{i}' for i in range(len(labels)))})")
        if prefixes:
            ranges = []
            for i, prefix in enumerate(prefixes):
                # A range, not substr() or LIKE: SQLite reads it from the path index (BINARY order
                # is UTF-8 byte order, i.e. code point order, the order of prefix_end()).
                values[f"_from{i}"] = prefix
                end = prefix_end(prefix)
                if end is None:
                    ranges.append(f"path >= :_from{i}")
                else:
                    values[f"_to{i}"] = end
                    ranges.append(f"(path >= :_from{i} AND path < :_to{i})")
            terms.append("(" + " OR ".join(ranges) + ")")
        if where:
            terms.append(f"({where}\n)")  # the newline ends a trailing "--" comment before the parenthesis
        sql = "SELECT pos FROM items" + (" WHERE " + " AND ".join(terms) if terms else "")
        con = self._guarded()
        deadline = time.monotonic() + seconds
        con.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        try:
            rows = con.execute(sql, values).fetchall()
        except sqlite3.Error as exc:  # SQL errors stay in this module; the caller words the message
            raise ConditionError(str(exc)) from None
        finally:
            con.set_progress_handler(None, 0)
        # In index order when an index was used: sorted here (a few hundred numbers, or one pass).
        return np.sort(np.array(rows, dtype=np.int64).reshape(-1))

    def has_filter_indexes(self) -> bool:
        """True when the table has the indexes of :data:`_INDEXES` (written by this version)."""
        names = {r[0] for r in self._con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        return {"items_label", "items_path"} <= names

    def close(self) -> None:
        """Close the connection (``with contextlib.closing(Metadata(path))``)."""
        self._con.close()
        if self._filter_con is not None:
            self._filter_con.close()
