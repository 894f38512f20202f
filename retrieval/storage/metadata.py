"""The item table ``items.sqlite``: every SQL statement of the project lives here.

Row ``pos`` describes FAISS position ``pos`` of every method's index; item
ids are the stable, user-facing identifiers, positions are dense and are
renumbered when items are removed.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ItemNotFound
from ..items import Item

COLUMNS = ("id", "title", "label", "path", "url", "length", "snippet", "extra")
_SCHEMA = ("CREATE TABLE items (pos INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT, "
           "label TEXT, path TEXT, url TEXT, length INTEGER, snippet TEXT, extra TEXT)")


def create(path: Path) -> None:
    """Create an empty item table at ``path``."""
    con = sqlite3.connect(path)
    try:
        con.execute(_SCHEMA)
        con.commit()
    finally:
        con.close()


def _insert(con: sqlite3.Connection, start: int, items: Sequence[Item], snippets: Sequence[str]) -> None:
    con.executemany(
        "INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)",
        ((start + i, it.id, it.title, it.label, it.path, it.url, len(it.text), snip, json.dumps(it.extra))
         for i, (it, snip) in enumerate(zip(items, snippets))))


def rewrite(path: Path, keep: np.ndarray, items: Sequence[Item], snippets: Sequence[str]) -> None:
    """Drop the rows not kept, renumber positions densely, append ``items`` after them.

    One transaction: a failure leaves the table as it was.

    Args:
        path: The ``items.sqlite`` file (of a staging copy).
        keep: Boolean mask over the current rows in position order.
        items: Items appended at the next positions.
        snippets: Their snippets (shown in hits).
    """
    con = sqlite3.connect(path)
    try:
        old = [row[0] for row in con.execute("SELECT pos FROM items ORDER BY pos")]
        if len(old) != len(keep):
            raise IndexFormatError(f"{path} has {len(old)} items where the index has {len(keep)}; rebuild it")
        if not np.all(keep):
            con.executemany("DELETE FROM items WHERE pos = ?", [(p,) for p, k in zip(old, keep) if not k])
            kept = [p for p, k in zip(old, keep) if k]
            # Two steps through negative numbers: a position is never taken twice.
            con.executemany("UPDATE items SET pos = ? WHERE pos = ?", [(-new - 1, p) for new, p in enumerate(kept)])
            con.execute("UPDATE items SET pos = -pos - 1 WHERE pos < 0")
        start = int(np.count_nonzero(keep))
        try:
            _insert(con, start, items, snippets)
        except sqlite3.IntegrityError:
            raise InputError("two items to add share an id; give every item a distinct id") from None
        con.commit()
    finally:
        con.close()


class Metadata:
    """Read access to ``items.sqlite`` (one read-only connection, kept open)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise IndexFormatError(f"{path} is missing; rebuild the index")
        # Read-only URI: a query must never modify an index.
        self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

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
        marks = ",".join("?" * len(positions))
        found = {row[0]: row[1:] for row in self._con.execute(
            f"SELECT pos, {', '.join(COLUMNS)} FROM items WHERE pos IN ({marks})", positions)}
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

    def ids(self) -> list[str]:
        """Every item id, in position order."""
        return [r[0] for r in self._con.execute("SELECT id FROM items ORDER BY pos")]

    def labels(self) -> np.ndarray:
        """Labels of all items in position order (``None`` where unknown)."""
        return np.array([r[0] for r in self._con.execute("SELECT label FROM items ORDER BY pos")], dtype=object)

    def close(self) -> None:
        """Close the connection (``with contextlib.closing(Metadata(path))``)."""
        self._con.close()
