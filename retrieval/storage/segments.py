"""The segments of an opened index, seen as one collection of items.

An index is a list of immutable segments (see :mod:`retrieval.storage.layout`);
each may have deletion marks. Everything above this module sees *positions*:
the items not removed, counted segment after segment in manifest order, dense
from 0 (as a single-folder index numbered them). :class:`Segments` maps them
to ``(segment, position in the segment)`` and back, concatenates the per-item
arrays, and opens each method's nearest-neighbour index over every segment
(:class:`retrieval.ann.SegmentedIndex`); :class:`Items` is the item table
over every segment's ``items.sqlite``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ItemNotFound
from .layout import IndexFolder, SegmentFolder
from .metadata import Metadata

_REBUILD = "rebuild the index with --force"


class Segments:
    """The segments listed by a manifest, with their deletion marks loaded.

    Args:
        folder: The index folder.
        manifest: Its manifest (current format).
        modality: The index's :class:`~retrieval.modality.Modality`.
    """

    def __init__(self, folder: IndexFolder, manifest: dict, modality) -> None:
        self.folder = folder
        self.manifest = manifest
        self.modality = modality
        self.entries: list[dict] = list(manifest.get("segments") or [])
        self.folders: list[SegmentFolder] = [folder.segment(entry["name"]) for entry in self.entries]
        self.sizes = np.array([int(entry["items"]) for entry in self.entries], dtype=np.int64)
        self.deleted = [self._marks(seg, entry) for seg, entry in zip(self.folders, self.entries)]
        live = self.sizes - np.array([len(d) for d in self.deleted], dtype=np.int64)
        #: ``starts[s]``: the position of segment ``s``'s first item; ``starts[-1]``: the item count.
        self.starts = np.concatenate([[0], np.cumsum(live)]).astype(np.int64)

    def _marks(self, seg: SegmentFolder, entry: dict) -> np.ndarray:
        if not entry.get("deletions"):
            if entry.get("deleted"):
                raise IndexFormatError(f"segment {entry['name']!r} counts {entry['deleted']} removed items but "
                                       f"names no deletion marks; {_REBUILD}")
            return np.zeros(0, np.int64)
        path = seg.deletions(entry["deletions"])
        try:
            marks = np.load(path, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"cannot read {path} ({exc}); {_REBUILD}") from None
        n = int(entry["items"])
        if (marks.ndim != 1 or len(marks) != int(entry.get("deleted", -1))
                or (len(marks) and (marks[0] < 0 or marks[-1] >= n or np.any(np.diff(marks) <= 0)))):
            raise IndexFormatError(f"{path} does not hold the {entry.get('deleted')} sorted positions below {n} "
                                   f"the manifest announces; {_REBUILD}")
        return marks

    # -- positions -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.starts[-1])

    def live(self, s: int) -> int:
        """Items of segment ``s`` not removed."""
        return int(self.starts[s + 1] - self.starts[s])

    def locate(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """``(segment, position in the segment)`` of each position.

        Raises:
            InputError: A position outside ``0 .. len - 1``.
        """
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            bad = positions[(positions < 0) | (positions >= len(self))][0]
            raise InputError(f"position {bad} is outside the index (0 .. {len(self) - 1})")
        seg = np.searchsorted(self.starts, positions, side="right") - 1
        local = positions - self.starts[seg]
        for s in np.unique(seg):
            if len(self.deleted[s]):
                local[seg == s] = positions_to_rows(local[seg == s], self.deleted[s])
        return seg, local

    def to_positions(self, s: int, local) -> np.ndarray:
        """Positions of segment ``s``'s rows ``local``; ``-1`` for removed rows and for ``-1`` (no result)."""
        return rows_to_positions(local, self.deleted[s], int(self.starts[s]))

    def live_rows(self, s: int) -> np.ndarray:
        """Rows of segment ``s`` not removed, in order."""
        mask = np.ones(int(self.sizes[s]), bool)
        mask[self.deleted[s]] = False
        return np.flatnonzero(mask)

    # -- files ----------------------------------------------------------------------------------
    def rel(self, path: Path) -> str:
        """``path`` relative to the index folder, as the manifest's ``files`` map spells it."""
        return Path(path).relative_to(self.folder.root).as_posix()

    def listed(self, path: Path) -> bool:
        """True when the manifest lists ``path`` (an index without a ``files`` map: when it exists)."""
        files = self.manifest.get("files")
        return self.rel(path) in files if isinstance(files, dict) else Path(path).exists()

    def has_inputs(self) -> bool:
        """True when every segment kept its model inputs (``--keep-inputs``)."""
        if not self.entries:
            return bool(self.manifest.get("config", {}).get("keep_inputs", True))
        return all(self.listed(seg.inputs(self.modality)) for seg in self.folders)

    def input_shards(self, s: int) -> list[Path]:
        """The files of segment ``s``'s stored inputs, in row order (the shards the manifest lists)."""
        return [path for path in self.modality.input_shards(self.folders[s].inputs(self.modality))
                if self.listed(path)]

    def inputs_bytes(self) -> int:
        """Bytes of the stored inputs of every segment."""
        return sum(path.stat().st_size for s in range(len(self.folders)) for path in self.input_shards(s))

    def per_item(self, load: Callable[[SegmentFolder], np.ndarray]) -> np.ndarray:
        """A per-item array over every segment (``load(segment folder)``), removed items left out."""
        parts = [_take(load(seg), self.deleted[s], self.live_rows, s) for s, seg in enumerate(self.folders)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def inputs(self, empty):
        """The stored model inputs of every item, position order.

        Args:
            empty: ``() -> inputs of no item`` (for an index without segments).
        """
        parts = list(self.iter_inputs())
        return self.modality.concat_all(parts) if parts else empty()

    def iter_inputs(self) -> Iterator:
        """The stored model inputs of every item, position order, one shard at a time (removed rows left out).

        Raises:
            IndexFormatError: A segment's shards hold another number of rows than its items.
        """
        for s in range(len(self.folders)):
            marks, start = self.deleted[s], 0
            for shard in self.modality.iter_shards(self.input_shards(s)):
                stop = start + shard.shape[0]
                lo, hi = np.searchsorted(marks, [start, stop])
                if hi > lo:
                    keep = np.ones(stop - start, bool)
                    keep[marks[lo:hi] - start] = False
                    shard = shard[np.flatnonzero(keep)]
                start = stop
                if shard.shape[0]:
                    yield shard
            if start != self.sizes[s]:
                raise IndexFormatError(f"the stored inputs of segment {self.entries[s]['name']!r} hold {start} rows "
                                       f"for its {self.sizes[s]} items; {_REBUILD}")

    def index(self, method: str):
        """The nearest-neighbour index of ``method`` over every segment.

        One segment without removed items: its own index, searched exactly as
        a single-folder index was.
        """
        from ..ann import SegmentedIndex, load_index

        info = self.manifest["methods"][method]
        parts = [load_index(info["index"], seg.method(method), info["metric"], info.get("search"),
                            info.get("factory")) for seg in self.folders]
        if len(parts) == 1 and not len(self.deleted[0]):
            return parts[0]
        return SegmentedIndex(parts, self, info["index"], info["metric"], info.get("search"))


def positions_to_rows(kept, marks: np.ndarray) -> np.ndarray:
    """Rows of the ``kept``-th rows not removed, given the sorted removed rows ``marks``.

    The ``j``-th row not removed is row ``j + #{i: c[i] <= j}``, where
    ``c[i] = marks[i] - i`` counts the rows kept before the ``i``-th removed
    one: a binary search, no array as long as the segment.
    """
    kept = np.asarray(kept, dtype=np.int64)
    if not len(marks):
        return kept
    return kept + np.searchsorted(marks - np.arange(len(marks)), kept, side="right")


def rows_to_positions(rows, marks: np.ndarray, start: int) -> np.ndarray:
    """Positions of ``rows`` of a segment whose first kept row is position ``start``.

    ``-1`` for a removed row and for ``-1`` (no result).
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = rows + start
    if len(marks):
        rank = np.searchsorted(marks, rows)
        removed = marks[np.minimum(rank, len(marks) - 1)] == rows
        out = out - rank
        out[removed] = -1
    out[rows < 0] = -1
    return out


def _take(array, marks: np.ndarray, rows: Callable[[int], np.ndarray], s: int):
    return array if not len(marks) else array[rows(s)]


class Items:
    """The item table of every segment, addressed by position (read-only).

    The interface of :class:`~retrieval.storage.Metadata`, over segments.

    Args:
        segments: The opened segments.
    """

    def __init__(self, segments: Segments) -> None:
        self.segments = segments
        self._tables: list[Metadata] = []
        try:
            for seg in segments.folders:
                self._tables.append(Metadata(seg.metadata))
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows())

    def rows(self, positions: Sequence[int] | None = None) -> list[dict]:
        """Metadata of the given positions in the given order (all rows, in position order, for ``None``)."""
        if positions is None:
            out = []
            for s, table in enumerate(self._tables):
                rows = table.rows()
                where = self.segments.to_positions(s, [row["position"] for row in rows])
                for row, pos in zip(rows, where):
                    if pos >= 0:
                        row["position"] = int(pos)
                        out.append(row)
            return out
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        seg, local = self.segments.locate(positions)
        groups: dict[int, list[int]] = {}  # segment -> indexes into positions (a query's hits: a few)
        for i, s in enumerate(seg.tolist()):
            groups.setdefault(s, []).append(i)
        out: list[dict | None] = [None] * len(positions)
        for s, at in groups.items():
            for i, row in zip(at, self._tables[s].rows(local[at])):
                row["position"] = int(positions[i])
                out[i] = row
        return out

    def position(self, item_id: str) -> int:
        """Position of the item with id ``item_id``."""
        for s in reversed(range(len(self._tables))):  # a replaced item lives in a later segment
            local = self._tables[s].local_position(item_id)
            if local is not None:
                pos = int(self.segments.to_positions(s, [local])[0])
                if pos >= 0:
                    return pos
        raise ItemNotFound(f"no item with id {item_id!r} in this index; "
                           "ids are shown by 'retrieval query ... --json'")

    def find(self, ids: Sequence[str]) -> dict[str, dict]:
        """``{id: row}`` of the given ids that are indexed (removed items are not)."""
        found = {}
        for s, table in enumerate(self._tables):
            rows = table.find(ids)
            for row, pos in zip(rows, self.segments.to_positions(s, [row["position"] for row in rows])):
                if pos >= 0:
                    row["position"] = int(pos)
                    found[row["id"]] = row
        return found

    def prefixed(self, prefixes: Sequence[str]) -> np.ndarray:
        """Positions of the items whose path or id starts with one of ``prefixes``, sorted."""
        parts = [self.segments.to_positions(s, table.prefixed(prefixes)) for s, table in enumerate(self._tables)]
        found = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return np.sort(found[found >= 0])

    def matching(self, condition: str, params: dict, seconds: float) -> np.ndarray:
        """Positions of the items (removed ones left out) for which an SQL condition holds, sorted.

        See :meth:`Metadata.matching`; ``seconds`` limits each segment's table.
        """
        parts = [self.segments.to_positions(s, table.matching(condition, params, seconds))
                 for s, table in enumerate(self._tables)]
        found = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return found[found >= 0]  # segments in order: positions stay sorted

    def filtered(self, labels: Sequence[str] = (), prefixes: Sequence[str] = (), where: str | None = None,
                 params: dict | None = None, seconds: float = 5.0) -> np.ndarray:
        """Positions of the items (removed ones left out) a filter keeps, sorted.

        See :meth:`Metadata.filtered`; ``seconds`` limits each segment's table.
        """
        parts = [self.segments.to_positions(s, table.filtered(labels, prefixes, where, params, seconds))
                 for s, table in enumerate(self._tables)]
        found = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return found[found >= 0]  # segments in order: positions stay sorted

    def ids(self) -> list[str]:
        """Every item id, in position order."""
        out: list[str] = []
        for s, table in enumerate(self._tables):
            ids = table.ids()
            out += ids if not len(self.segments.deleted[s]) else [ids[i] for i in self.segments.live_rows(s)]
        return out

    def labels(self) -> np.ndarray:
        """Labels of all items in position order (``None`` where unknown)."""
        parts = [_take(table.labels(), self.segments.deleted[s], self.segments.live_rows, s)
                 for s, table in enumerate(self._tables)]
        return np.concatenate(parts) if parts else np.array([], dtype=object)

    def table(self, s: int) -> Metadata:
        """The item table of segment ``s`` (its own positions)."""
        return self._tables[s]

    def close(self) -> None:
        """Close every segment's connection."""
        for table in self._tables:
            table.close()


def open_items(folder: Path) -> Items:
    """The item table of the index in ``folder`` as its manifest lists it now (unverified; close it after use)."""
    from ..modality import modality_of
    from .layout import read_manifest

    manifest = read_manifest(folder)
    return Items(Segments(IndexFolder(Path(folder)), manifest, modality_of(manifest)))
