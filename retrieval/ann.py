"""Nearest-neighbour backends (FAISS) behind one small interface, and a factory.

Every FAISS index is built from a factory string (``"Flat"``, ``"IVF64,Flat"``,
``"HNSW32"``, ``"BFlat"``, ``"BIVF64"``), which the manifest records beside
the index's search parameters (``nprobe``, ``ef_search``): an opened index
searches exactly as it was built to, not with whatever defaults the code
has later.

Every backend answers ``search(queries, k) -> (scores, positions)`` with
*higher scores better*: cosine similarity for ``metric="cosine"`` (vectors are
L2-normalised, then FAISS inner product), minus the Euclidean distance for
``metric="l2"``, minus the Hamming distance for ``metric="hamming"`` (packed
binary codes). :class:`PQIndex` stores ``groups`` bytes per item (product
quantisation: the VQ autoencoder's learned codebook or FAISS' own k-means)
and compares the float query with them (asymmetric distance). Positions index the rows added, in order; the store maps them
to item ids.

An index made of segments (:mod:`retrieval.storage.segments`) has one backend
per segment; :class:`SegmentedIndex` searches each without its removed rows
and merges their top ``k`` by score. IVF kinds share one trained quantizer
(a *template*, the trained empty index, saved beside the encoder), so every
segment probes the same cells and a merged search equals one index's.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np
import scipy.sparse as sp

from .config import FILTER_EXACT_ITEMS, INDEX_KINDS
from .encoders.base import l2_normalize
from .errors import IndexFormatError, InputError
from .storage.layout import INDEX_STEM, TEMPLATE_STEM
from .storage.segments import positions_to_rows, rows_to_positions

#: Above this many items ``kind="auto"`` switches from exact to HNSW search:
#: below it a flat scan of 32-d codes takes well under a millisecond.
APPROX_THRESHOLD = 200_000
#: Above this many items ``kind="auto"`` switches binary codes from an exact
#: Hamming scan to a binary IVF. Measured (BENCHMARKS.md, scale table): the
#: exact scan of 64-bit codes costs ~1 ms per million items on one core.
BINARY_APPROX_THRESHOLD = 1_000_000
#: Above this many codes one query's exact Hamming scan is split over FAISS'
#: OpenMP thread count (``OMP_NUM_THREADS``): FAISS parallelises a binary
#: search over queries only, so a single query scanned one core. Measured
#: (BENCHMARKS.md, "Query p50 over 1M documents with 64-bit codes"): 1M
#: 64-bit codes, 1.10 ms on one thread against 0.80 ms on two, under load.
SPLIT_SCAN_CODES = 262_144
#: Cells of one block of the exact sparse search's similarities (queries x rows): about 64 MB dense.
SPARSE_BLOCK_CELLS = 16_000_000
#: From this many codes on, ``kind="flat"`` (and ``"auto"``) stores binary codes in
#: an exact pruned index (:class:`BinaryPrunedIndex`) instead of a flat scan.
#: Measured (BENCHMARKS.md, "Query p50 over 1M documents with 64-bit codes"):
PRUNED_SCAN_CODES = 262_144
#: FAISS' k-means wants at least this many training points per centroid (it warns below).
MIN_CODES_PER_CELL = 39
#: The pruned search's first pass scans at least this many of the nearest cells.
FIRST_CELLS = 8
#: Batches up to this size are searched on one thread (see FaissIndex.search).
SINGLE_THREAD_QUERIES = 16
METRICS = ("cosine", "l2", "hamming")
#: Exact scoring of a filter's rows reads this many rows at a time (bounds the score block).
_SCORE_CHUNK = 65_536


def best_of(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row of ``scores`` (higher better) with their ids, best first.

    Ties go to the smaller id, so an exact filtered search ranks as a
    brute-force sort of the filtered items does.

    Args:
        scores: ``(n_queries, m)``.
        ids: ``(m,)`` the id of each column.
        k: Results per query.

    Returns:
        ``(scores, ids)``, each ``(n_queries, min(k, m))``.
    """
    n, m = scores.shape
    take = min(k, m)
    out_scores = np.empty((n, take), np.float32)
    out_ids = np.empty((n, take), np.int64)
    for qi in range(n):
        row = scores[qi]
        if take < m:
            kth = np.partition(row, m - take)[m - take]  # the take-th largest score
            better = np.flatnonzero(row > kth)
            equal = np.flatnonzero(row == kth)
            equal = equal[np.argsort(ids[equal], kind="stable")[:take - len(better)]]
            chosen = np.concatenate([better, equal])
        else:
            chosen = np.arange(m)
        order = chosen[np.lexsort((ids[chosen], -row[chosen]))]
        out_scores[qi], out_ids[qi] = row[order], ids[order]
    return out_scores, out_ids


def check_k(k: int) -> int:
    """Validate a requested number of results."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"-k must be a positive number of results; got {k}")
    return int(k)


class Deletions:
    """Removed rows of one segment's index, as the backends exclude them from a search.

    Args:
        positions: The removed rows, sorted.
        size: Rows in the segment's index.
    """

    def __init__(self, positions: np.ndarray, size: int) -> None:
        self.positions = np.asarray(positions, dtype=np.int64)
        self.size = int(size)
        self._selector = None
        self._alive = None
        #: Per-cell counts of kept rows, by the cells they were counted for (BinaryPrunedIndex).
        self.live_cells: dict = {}

    def __len__(self) -> int:
        return len(self.positions)

    def alive(self) -> np.ndarray:
        """``(size,)`` booleans, True for the rows kept (built once)."""
        if self._alive is None:
            keep = np.ones(self.size, bool)
            keep[self.positions] = False
            self._alive = keep
        return self._alive

    def selector(self):
        """A FAISS ``IDSelectorBitmap`` of the rows kept (built once; it holds a pointer into ``_bitmap``)."""
        if self._selector is None:
            keep = np.ones(self.size, bool)
            keep[self.positions] = False
            self._bitmap = np.packbits(keep, bitorder="little")
            self._selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(self._bitmap))
        return self._selector


class VectorIndex:
    """Interface of all backends."""

    kind: ClassVar[str] = ""
    filename: ClassVar[str] = f"{INDEX_STEM}.faiss"
    #: Hamming distances over packed bits (two-stage search applies).
    binary: ClassVar[bool] = False
    #: The index has a trained structure (IVF cells) every segment must share.
    trained: ClassVar[bool] = False
    #: Segments' indexes of this kind can be joined into one in memory (see :meth:`combine`).
    combinable: ClassVar[bool] = True

    def __init__(self, metric: str = "cosine") -> None:
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        self.metric = metric

    def _prepare(self, codes: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(codes, dtype=np.float32)
        return l2_normalize(codes) if self.metric == "cosine" else codes

    def add(self, codes) -> None:  # pragma: no cover - abstract
        """Add rows; they get the next positions."""
        raise NotImplementedError

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """Return ``(scores, positions)``, each ``(n_queries, min(k, len))``."""
        raise NotImplementedError

    def search_live(self, queries, k: int, deletions: Deletions | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` without the rows of ``deletions`` (``-1`` pads rows with fewer results).

        This default searches ``k`` more rows per removed one and drops them;
        FAISS backends that take an ``IDSelector`` skip them during the scan.
        """
        if deletions is None or not len(deletions):
            return self.search(queries, k)
        scores, positions = self.search(queries, min(k + len(deletions), len(self)))
        removed = np.isin(positions, deletions.positions) | (positions < 0)
        order = np.argsort(removed, axis=1, kind="stable")[:, :k]  # kept rows first, in their order
        scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        positions = np.take_along_axis(positions, order, axis=1)
        gone = np.take_along_axis(removed, order, axis=1)
        scores[gone], positions[gone] = -np.inf, -1
        return scores, positions

    def score_rows(self, queries, rows: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Exact scores ``(n_queries, len(rows))`` of the given rows, in the index's metric (higher better)."""
        raise NotImplementedError

    def search_rows(self, queries, k: int, rows, exact_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` among the given rows only (a filter resolved before the search).

        This default scores exactly those rows (:meth:`score_rows`), a chunk at
        a time; FAISS backends that take an ``IDSelector`` hand a filter of
        more than ``exact_items`` rows to their own search instead.

        Args:
            queries: Query codes.
            k: Results per query.
            rows: The allowed rows, sorted, without removed ones.
            exact_items: Above this many rows use the index's own search when it
                can (default :data:`~retrieval.config.FILTER_EXACT_ITEMS`).

        Returns:
            ``(scores, rows)``, each ``(n_queries, min(k, len(rows)))``, best first.
        """
        k = check_k(k)
        rows = np.asarray(rows, dtype=np.int64)
        n_queries = queries.shape[0]
        if len(rows) <= _SCORE_CHUNK:
            return best_of(self.score_rows(queries, rows), rows, k)
        scores, ids = [], []
        for start in range(0, len(rows), _SCORE_CHUNK):
            chunk = rows[start:start + _SCORE_CHUNK]
            s, i = best_of(self.score_rows(queries, chunk), chunk, k)
            scores.append(s)
            ids.append(i)
        scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        out = [best_of(scores[qi:qi + 1], ids[qi], k) for qi in range(n_queries)]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    def __len__(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def stored(self):  # pragma: no cover
        """Every stored row in position order (as indexed: normalised for cosine)."""
        raise NotImplementedError

    def template(self) -> "VectorIndex":
        """An empty index of the same kind and parameters, with this one's trained structure (IVF cells)."""
        return type(self)(**self._params())

    @classmethod
    def combine(cls, parts: list["VectorIndex"]) -> "VectorIndex":
        """One index holding the rows of ``parts`` in order (their trained structure, if any, is shared).

        This default copies the stored rows into a new index; backends that
        can move their data instead do (the parts may be emptied).
        """
        return merge(parts[0].template(), [(part, np.arange(len(part))) for part in parts])

    def save_template(self, folder: Path) -> Path | None:
        """Write :meth:`template` into a method's folder when the kind is :attr:`trained` (else nothing)."""
        return None

    def settled(self) -> "VectorIndex":
        """The index a build saves once every row is added: this one, or one with its structure relearned."""
        return self

    def _params(self) -> dict:
        return {"metric": self.metric}

    def search_params(self) -> dict:
        """The parameters that change how the index searches (saved in the manifest)."""
        return {k: v for k, v in self._params().items() if k != "metric"}

    @property
    def factory(self) -> str | None:
        """The FAISS factory string the index was built from (``None``: not a FAISS index)."""
        return None

    def save(self, folder: Path) -> Path:  # pragma: no cover
        """Write the index into ``folder``; returns the file written."""
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path, metric: str) -> "VectorIndex":  # pragma: no cover
        """Read an index written by :meth:`save`."""
        raise NotImplementedError


_SCAN_POOLS: dict[int, ThreadPoolExecutor] = {}


def _scan_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads for split scans (created once: threads cost ~50 us to start)."""
    if workers not in _SCAN_POOLS:
        # One OpenMP thread each: a part is one query's scan, and FAISS would
        # otherwise start an idle OpenMP team inside every pool thread.
        _SCAN_POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="retrieval-scan",
                                                  initializer=faiss.omp_set_num_threads, initargs=(1,))
    return _SCAN_POOLS[workers]


def _faiss_search(index, queries: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
    extra = {} if params is None else {"params": params}
    if len(queries) <= SINGLE_THREAD_QUERIES:
        # Measured: one query through FAISS' OpenMP pool right after a
        # BLAS product waits ~15 ms for threads; alone it takes 0.2 ms.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(queries, k, **extra)
        finally:
            faiss.omp_set_num_threads(threads)
    return index.search(queries, k, **extra)


class _FaissBacked(VectorIndex):
    """A FAISS index object built on the first ``add``, persisted in one file."""

    _write = staticmethod(faiss.write_index)
    _read = staticmethod(faiss.read_index)
    _clone = staticmethod(faiss.clone_index)

    def __init__(self, metric: str = "cosine") -> None:
        super().__init__(metric)
        self.index_ = None
        self.factory_ = None

    def keep(self, rows: np.ndarray) -> "VectorIndex":
        if len(rows) or self.index_ is None:
            return super().keep(rows)
        # No row left: the same index emptied. Rebuilding it would train an
        # IVF quantizer on nothing (FAISS refuses); the emptied one keeps its
        # cells, so the next add needs no training either.
        other = type(self)(**self._params())
        other.index_, other.factory_ = self._clone(self.index_), self.factory_
        other.index_.reset()
        return other

    def _factory_string(self, n: int, d: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self, codes: np.ndarray):
        n, width = codes.shape
        self.factory_ = self._factory_string(n, width)
        return self._from_factory(self.factory_, codes)

    def _from_factory(self, factory: str, codes: np.ndarray):
        return faiss.index_factory(codes.shape[1], factory, self._faiss_metric())

    @property
    def factory(self) -> str | None:
        return self.factory_

    def add(self, codes) -> None:
        codes = self._prepare(codes)
        if self.index_ is None:
            self.index_ = self._build(codes)
        self.index_.add(codes)

    def train(self, codes, n_items: int) -> None:
        """Build the empty index for ``n_items`` codes from a sample of them, adding none.

        A build adds its items a chunk at a time: an index that learns from
        its codes (:attr:`trained`: IVF cells) learns here, from the training
        sample and sized for the whole collection, not from the first chunk.
        """
        codes = self._prepare(codes)
        self.factory_ = self._factory_string(n_items, codes.shape[1])
        self.index_ = self._from_factory(self.factory_, codes)

    def __len__(self) -> int:
        return 0 if self.index_ is None else int(self.index_.ntotal)

    def stored(self) -> np.ndarray:
        if self.index_ is None:
            return np.zeros((0, 0), np.float32)
        if hasattr(self.index_, "make_direct_map") and not self.index_.direct_map.type:
            self.index_.make_direct_map()  # IVF lists are unordered without it
        return self.index_.reconstruct_n(0, self.index_.ntotal)

    def save(self, folder: Path) -> Path:
        path = folder / self.filename
        self._write(self.index_, str(path))
        return path

    @classmethod
    def load(cls, folder: Path, metric: str, **search):
        return cls._load_file(folder / cls.filename, metric, search)

    @classmethod
    def _load_file(cls, path: Path, metric: str, search: dict):
        self = cls(metric, **search)
        try:
            self.index_ = cls._read(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(f"cannot read {path} ({str(exc).splitlines()[0]}); rebuild the index") from None
        self._after_load()
        return self

    def _after_load(self) -> None:
        pass

    def _search_parameters(self, selector):
        """FAISS search parameters that keep this index's settings and add ``selector`` (``None``: unsupported)."""
        return faiss.SearchParameters(sel=selector)

    #: A filter keeping less than this share of the rows is scored exactly even when
    #: it keeps many (a graph search that skips most nodes misses neighbours).
    selector_min_fraction: ClassVar[float] = 0.0
    #: Filters are always scored exactly: the index is a full scan anyway, and one
    #: matrix product over the kept rows beats FAISS' scan with a selector.
    exact_filters: ClassVar[bool] = False

    def search_rows(self, queries, k: int, rows, exact_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        limit = FILTER_EXACT_ITEMS if exact_items is None else exact_items
        if (not self.exact_filters and len(rows) > limit
                and len(rows) >= self.selector_min_fraction * len(self)):
            keep = np.zeros(len(self), bool)
            keep[rows] = True
            bitmap = np.packbits(keep, bitorder="little")  # alive until the search returns
            params = self._search_parameters(faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bitmap)))
            if params is not None:
                scores, found = self.search(queries, min(check_k(k), len(rows)), params)
                scores = scores.astype(np.float32)
                scores[found < 0] = -np.inf
                return scores, found
        return super().search_rows(queries, k, rows, exact_items)

    def search_live(self, queries, k: int, deletions: Deletions | None) -> tuple[np.ndarray, np.ndarray]:
        if deletions is None or not len(deletions):
            return self.search(queries, k)
        params = self._search_parameters(deletions.selector())
        if params is None:
            return super().search_live(queries, k, deletions)
        scores, positions = self.search(queries, k, params)
        scores = scores.astype(np.float32)
        scores[positions < 0] = -np.inf
        return scores, positions

    @classmethod
    def template_path(cls, folder: Path) -> Path:
        """Where :meth:`save_template` writes in a method's folder."""
        return folder / (TEMPLATE_STEM + Path(cls.filename).suffix)

    def template(self) -> "VectorIndex":
        if not self.trained:
            other = super().template()
            other.factory_ = self.factory_
            return other
        other = type(self)(**self._params())
        other.index_ = self._clone(self.index_)  # copies the lists too: only a build does this
        other.index_.reset()
        other.factory_ = self.factory_
        other._after_load()
        return other

    def save_template(self, folder: Path) -> Path | None:
        if not self.trained:
            return None
        path = self.template_path(folder)
        self._write(self.template().index_, str(path))
        return path

    @classmethod
    def load_template(cls, folder: Path, metric: str, search: dict, factory: str | None):
        """The template saved by :meth:`save_template` (``None`` when the method has none)."""
        path = cls.template_path(folder)
        if not path.exists():
            return None
        self = cls._load_file(path, metric, search)
        self.factory_ = factory
        return self


class FaissIndex(_FaissBacked):
    """Shared code of the FAISS float backends."""

    def _faiss_metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2

    def search(self, queries, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        k = min(check_k(k), len(self))
        queries = self._prepare(queries)
        scores, positions = _faiss_search(self.index_, queries, k, params)
        if self.metric == "l2":  # FAISS returns squared distances, lower better
            scores = -np.sqrt(np.maximum(scores, 0))
        return scores, positions

    @classmethod
    def combine(cls, parts):
        # FAISS moves the other indexes' codes (IVF: lists of the same cells); ids are row numbers.
        base = parts[0]
        for part in parts[1:]:
            base.index_.merge_from(part.index_, base.index_.ntotal if cls.trained else 0)
        return base

    def score_rows(self, queries, rows) -> np.ndarray:
        queries = self._prepare(queries)
        matrix = self._matrix()
        if self.metric == "cosine" and matrix is not None and len(rows) > len(matrix) // 4:
            # Many rows: one product over every row read in place (a sequential
            # scan, as the unfiltered search) costs less than gathering them.
            return (queries @ matrix.T)[:, np.asarray(rows, dtype=np.int64)]
        stored = self.vectors(rows)
        if self.metric == "cosine":
            return queries @ stored.T
        # Differences, not |x|^2 + |y|^2 - 2xy: that form loses the small
        # distances of large vectors (raw pixels) to cancellation.
        out = np.empty((len(queries), len(stored)), np.float32)
        for qi, query in enumerate(queries):
            diff = stored - query
            out[qi] = -np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return out

    def _matrix(self) -> np.ndarray | None:
        """Every stored row, read in place (no copy), when the index keeps them as one array (flat, HNSW)."""
        index = self.index_
        if isinstance(index, faiss.IndexHNSW):
            index = faiss.downcast_index(index.storage)
        if not isinstance(index, faiss.IndexFlat) or not index.ntotal:
            return None
        return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)

    def vectors(self, positions) -> np.ndarray:
        """The stored (normalised, for cosine) vectors at ``positions``, float32."""
        positions = np.asarray(positions, dtype=np.int64)
        matrix = self._matrix()
        if matrix is not None:
            return matrix[positions]
        if isinstance(self.index_, faiss.IndexIVF) and not self.index_.direct_map.type:
            self.index_.make_direct_map()
        return self.index_.reconstruct_batch(positions)


class FlatIndex(FaissIndex):
    """Exact search: a full scan (``IndexFlatIP`` / ``IndexFlatL2``)."""

    kind = "flat"
    # Measured on 60,000 32-d codes (BENCHMARKS.md, "Filtered search"): exact
    # scoring of a filter of 6,000 rows took 0.2 ms, FAISS' scan with a
    # selector 1.5 ms; of 30,000 rows the selector scan took 6 ms, the full
    # unfiltered scan 1 ms.
    exact_filters = True

    def _factory_string(self, n, d):
        return "Flat"


class IVFIndex(FaissIndex):
    """Inverted file: k-means cells, ``nprobe`` of them scanned per query.

    Args:
        metric: ``"cosine"`` or ``"l2"``.
        nprobe: Cells scanned per query (recall against speed).
    """

    kind = "ivf"
    trained = True

    def __init__(self, metric: str = "cosine", nprobe: int = 16) -> None:
        super().__init__(metric)
        self.nprobe = nprobe

    def _params(self) -> dict:
        return {"metric": self.metric, "nprobe": self.nprobe}

    def _factory_string(self, n, d):
        # FAISS wants ~39 training points per centroid; sqrt(n) cells balance
        # the scan of centroids against the scan inside cells.
        return f"IVF{int(max(1, min(4 * np.sqrt(n), n // MIN_CODES_PER_CELL)))},Flat"

    def _from_factory(self, factory, codes):
        index = super()._from_factory(factory, codes)
        index.train(codes)
        index.nprobe = min(self.nprobe, index.nlist)
        return index

    def _after_load(self) -> None:
        self.index_.nprobe = min(self.nprobe, self.index_.nlist)

    def _search_parameters(self, selector):
        return faiss.SearchParametersIVF(sel=selector, nprobe=self.index_.nprobe)


class HNSWIndex(FaissIndex):
    """Hierarchical navigable small-world graph (``IndexHNSWFlat``)."""

    kind = "hnsw"
    combinable = False  # a graph per segment: joining them means building a new one
    # FAISS walks the whole graph and skips the rows not selected: with few
    # selected the walk ends before finding k of them (measured: a filter
    # keeping 1 of 600 returned nothing). Below a tenth they are scored exactly.
    selector_min_fraction = 0.1

    def __init__(self, metric: str = "cosine", m: int = 32, ef_search: int = 128) -> None:
        super().__init__(metric)
        self.m = m
        self.ef_search = ef_search

    def _params(self) -> dict:
        return {"metric": self.metric, "m": self.m, "ef_search": self.ef_search}

    def _factory_string(self, n, d):
        return f"HNSW{self.m}"

    def _from_factory(self, factory, codes):
        index = super()._from_factory(factory, codes)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = self.ef_search
        return index

    def _after_load(self) -> None:
        self.index_.hnsw.efSearch = self.ef_search

    def _search_parameters(self, selector):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=self.index_.hnsw.efSearch)


class SparseIndex(VectorIndex):
    """Exact cosine search over sparse rows (the TF-IDF baseline).

    FAISS has no sparse index; a CSR matrix product is exact and, for a
    bag-of-words, touches only the query's terms.
    """

    kind = "sparse"
    filename = f"{INDEX_STEM}.npz"

    def __init__(self, metric: str = "cosine") -> None:
        if metric != "cosine":
            raise InputError(f"the sparse index supports only cosine; got {metric!r}")
        super().__init__(metric)
        self._rows: sp.csr_matrix | None = None
        self._added: list[sp.csr_matrix] = []
        self._transposed: sp.csr_matrix | None = None

    @property
    def matrix_(self) -> sp.csr_matrix | None:
        """Every row added, normalised. A build adds chunk after chunk: they are stacked once, when read."""
        if self._added:
            parts = ([] if self._rows is None else [self._rows]) + self._added
            self._rows = parts[0] if len(parts) == 1 else sp.vstack(parts).tocsr()
            self._added, self._transposed = [], None
        return self._rows

    @matrix_.setter
    def matrix_(self, value: sp.csr_matrix | None) -> None:
        self._rows, self._added, self._transposed = value, [], None

    @staticmethod
    def _normalize(X) -> sp.csr_matrix:
        X = sp.csr_matrix(X, dtype=np.float32)
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ X)

    def add(self, codes) -> None:
        self._added.append(self._normalize(codes))

    @classmethod
    def combine(cls, parts):
        other = cls(parts[0].metric)
        other.matrix_ = sp.vstack([part.matrix_ for part in parts]).tocsr()
        other._transposed = other.matrix_.T.tocsr()
        return other

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(check_k(k), len(self))
        queries = self._normalize(queries)
        matrix = self.matrix_
        if self._transposed is None:
            self._transposed = matrix.T.tocsr()
        scores = np.empty((queries.shape[0], k), np.float32)
        positions = np.empty((queries.shape[0], k), np.int64)
        # Queries per block: the (step x n) similarities exist twice (sparse, then dense), so
        # the block is capped near SPARSE_BLOCK_CELLS cells: 256 queries at 20NG size, 16 at
        # a million rows (a fixed 256 there made a 6 GB spike).
        step = max(1, min(256, SPARSE_BLOCK_CELLS // max(matrix.shape[0], 1)))
        for start in range(0, queries.shape[0], step):
            block = (queries[start:start + step] @ self._transposed).toarray()
            top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else \
                np.tile(np.arange(block.shape[1]), (block.shape[0], 1))
            top_scores = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            positions[start:start + step] = np.take_along_axis(top, order, axis=1)
            scores[start:start + step] = np.take_along_axis(top_scores, order, axis=1)
        return scores, positions

    def score_rows(self, queries, rows) -> np.ndarray:
        queries = self._normalize(queries)
        return np.asarray((self.matrix_[np.asarray(rows, dtype=np.int64)] @ queries.T).toarray().T, np.float32)

    def __len__(self) -> int:
        return sum(part.shape[0] for part in ([] if self._rows is None else [self._rows]) + self._added)

    def stored(self) -> sp.csr_matrix:
        return self.matrix_ if self.matrix_ is not None else sp.csr_matrix((0, 0), dtype=np.float32)

    def save(self, folder: Path) -> Path:
        path = folder / self.filename
        sp.save_npz(path, self.matrix_, compressed=False)
        return path

    @classmethod
    def load(cls, folder: Path, metric: str, **search) -> "SparseIndex":
        self = cls(metric)
        try:
            self.matrix_ = sp.load_npz(folder / cls.filename).tocsr()
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"cannot read {folder / cls.filename} ({exc}); rebuild the index") from None
        self._transposed = self.matrix_.T.tocsr()  # at load, not on the first query
        return self


class BinaryIndex(_FaissBacked):
    """Shared code of the Hamming backends over packed ``uint8`` codes.

    Scores are minus the Hamming distance (higher is better, like the float
    backends).
    """

    filename = f"{INDEX_STEM}.faissb"
    binary = True
    _write = staticmethod(faiss.write_index_binary)
    _read = staticmethod(faiss.read_index_binary)
    _clone = staticmethod(faiss.clone_binary_index)

    def __init__(self, metric: str = "hamming") -> None:
        if metric != "hamming":
            raise InputError(f"binary indexes search Hamming distances; got metric {metric!r}")
        super().__init__(metric)

    def _from_factory(self, factory, codes):
        return faiss.index_binary_factory(codes.shape[1] * 8, factory)

    def _prepare(self, codes) -> np.ndarray:
        codes = np.ascontiguousarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2:
            raise InputError(f"binary indexes take packed uint8 codes (n, bits/8); got {codes.dtype} {codes.shape}")
        return codes

    def search(self, queries, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        k = min(check_k(k), len(self))
        distances, positions = _faiss_search(self.index_, self._prepare(queries), k, params)
        return -distances.astype(np.float32), positions

    def add(self, codes) -> None:
        self._codes = None
        super().add(codes)

    def score_rows(self, queries, rows) -> np.ndarray:
        # The packed codes are small (bits / 8 bytes an item): read once, kept.
        if getattr(self, "_codes", None) is None or len(self._codes) != len(self):
            self._codes = np.ascontiguousarray(self.stored())
        codes = self._codes[np.asarray(rows, dtype=np.int64)]
        queries = self._prepare(queries)
        out = np.empty((len(queries), len(codes)), np.float32)
        for qi, query in enumerate(queries):
            out[qi] = -np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int32)
        return out

    def within(self, query, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code within Hamming ``radius`` of one query: (scores, positions), nearest first.

        Exact on the flat index; the IVF index only looks in its ``nprobe``
        cells, so its ball may miss codes that sit in other cells.
        """
        lims, distances, positions = self.index_.range_search(self._prepare(query)[:1], int(radius) + 1)
        order = np.argsort(distances[lims[0]:lims[1]], kind="stable")
        return (-distances[lims[0]:lims[1]][order].astype(np.float32),
                positions[lims[0]:lims[1]][order].astype(np.int64))

    @property
    def bits(self) -> int:
        """Code length in bits."""
        return 0 if self.index_ is None else int(self.index_.d)


class BinaryFlatIndex(BinaryIndex):
    """Exact Hamming scan (``IndexBinaryFlat``): popcounts over every code.

    A few queries over a large index are scanned in parts on parallel threads
    (:data:`SPLIT_SCAN_CODES`); the parts' hits are merged by (distance,
    position), the order FAISS' own heap keeps, so the results are identical.
    """

    kind = "binary-flat"

    def _factory_string(self, n, width):
        return "BFlat"

    def search(self, queries, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        parts = self._scan_parts() if params is None and len(queries) <= SINGLE_THREAD_QUERIES else None
        if parts is None:
            return super().search(queries, k, params)
        k = min(check_k(k), len(self))
        queries = self._prepare(queries)
        # The parts' searches release the GIL: all but the first run on the pool, the first here.
        futures = [_scan_pool(len(parts) - 1).submit(index.search, queries, k) for index, _ in parts[1:]]
        found = [_faiss_search(parts[0][0], queries, k)] + [future.result() for future in futures]
        distances = np.concatenate([d for d, _ in found], axis=1).astype(np.int64)
        positions = np.concatenate([p + np.where(p >= 0, start, 0) for (_, p), (_, start) in zip(found, parts)],
                                   axis=1)
        # Missing hits (-1) sort last: FAISS gives them the largest distance.
        key = np.where(positions >= 0, distances * (len(self) + 1) + positions, np.iinfo(np.int64).max)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        distances, positions = np.take_along_axis(distances, order, 1), np.take_along_axis(positions, order, 1)
        return -distances.astype(np.float32), positions

    def _scan_parts(self) -> list | None:
        """``[(IndexBinaryFlat, first position), ...]`` over this index's codes, or ``None`` to scan it whole."""
        threads = faiss.omp_get_max_threads()
        if threads < 2 or self.index_ is None or len(self) < SPLIT_SCAN_CODES:
            return None
        key = (id(self.index_), len(self), threads)
        if getattr(self, "_parts_key", None) != key:  # built on first use; an add changes the key
            codes = faiss.vector_to_array(self.index_.xb).reshape(len(self), -1)
            self._parts = []
            for rows in np.array_split(np.arange(len(self)), threads):
                part = faiss.IndexBinaryFlat(self.index_.d)
                part.add(np.ascontiguousarray(codes[rows[0]:rows[-1] + 1]))
                self._parts.append((part, int(rows[0])))
            self._parts_key = key
        return self._parts


class BinaryIVFIndex(BinaryIndex):
    """Sub-linear Hamming search: binary k-means cells, ``nprobe`` scanned per query.

    Args:
        metric: Must be ``"hamming"``.
        nprobe: Cells scanned per query (recall against speed). Measured on
            clustered 64-bit codes (BENCHMARKS.md, scale table): 64 keeps
            recall@100 >= 0.96 at 1M and 10M codes for 0.07 / 0.15 ms.
        nlist: Number of cells (default: :meth:`cells_for` the collection).
    """

    kind = "binary-ivf"
    trained = True
    #: The cells are relearned from every code once a build has added them (:meth:`settled`).
    relearns: ClassVar[bool] = False

    def __init__(self, metric: str = "hamming", nprobe: int = 64, nlist: int | None = None) -> None:
        super().__init__(metric)
        self.nprobe = nprobe
        self.nlist = nlist

    def _params(self) -> dict:
        return {"metric": self.metric, "nprobe": self.nprobe, "nlist": self.nlist}

    def _factory_string(self, n, width):
        return f"BIVF{self.nlist or self.cells_for(n)}"

    @staticmethod
    def cells_for(n: int) -> int:
        """The default number of cells for ``n`` codes: ``4 * sqrt(n)``, at most ``n / 39``."""
        return int(max(1, min(4 * np.sqrt(n), n // MIN_CODES_PER_CELL)))

    def _from_factory(self, factory, codes):
        n = len(codes)
        if self.relearns and self.nlist is None and n < MIN_CODES_PER_CELL * int(factory[4:]):
            # Sized for the collection, trained on a smaller sample (a build's): k-means of fewer
            # than MIN_CODES_PER_CELL codes a cell (FAISS warns) gives cells of 1-3 codes.
            # Fewer cells until settled() relearns them from every code.
            factory = self.factory_ = f"BIVF{max(1, n // MIN_CODES_PER_CELL)}"
        index = super()._from_factory(factory, codes)
        nlist = index.nlist
        # Binary k-means is trained on a sample: 64 points per cell are plenty
        # (measured: ~16 s for a million codes on one idle core).
        rng = np.random.default_rng(0)
        sample = codes if n <= 64 * nlist else codes[np.sort(rng.choice(n, 64 * nlist, replace=False))]
        index.train(sample)
        index.nprobe = min(self.nprobe, nlist)
        return index

    def _after_load(self) -> None:
        self.index_.nprobe = min(self.nprobe, self.index_.nlist)

    def _search_parameters(self, selector):
        return None  # FAISS 1.15: "IDSelector is not supported for IndexBinaryIVF"

    @classmethod
    def combine(cls, parts):
        base = parts[0]
        for part in parts[1:]:
            base.index_.merge_from(part.index_, base.index_.ntotal)
        return base



class BinaryPrunedIndex(BinaryIVFIndex):
    """Exact Hamming search that scans only the binary k-means cells that can hold a hit.

    A code ``x`` of cell ``c`` (centroid ``c``; the cell's radius ``r_c`` is
    the largest distance of its codes to ``c``) is at least
    ``d(q, c) - r_c`` from the query ``q`` (triangle inequality). The nearest
    cells first give an upper bound ``D`` on the k-th distance; then every
    cell with ``d(q, c) - r_c <= D`` is scanned for the codes within ``D``,
    and the best ``k`` of those by (distance, position) are the hits: the
    same hits, ties included, as the flat scan (:class:`BinaryFlatIndex`).
    Measured on 1M clustered 64-bit codes (BENCHMARKS.md, "Query p50 over 1M
    documents with 64-bit codes"): ~8 % of the codes scanned per query.
    The radii are computed from the inverted lists when the index is opened
    or grows, so the file is an ordinary FAISS binary IVF.

    Args:
        metric: Must be ``"hamming"``.
        nlist: Number of cells (default: :meth:`BinaryIVFIndex.cells_for` the collection).
    """

    kind = "binary-pruned"
    relearns = True

    def __init__(self, metric: str = "hamming", nlist: int | None = None) -> None:
        super().__init__(metric, nprobe=0, nlist=nlist)
        self._cells_key = None
        self._cells_lock = threading.Lock()

    def _params(self) -> dict:
        return {"metric": self.metric, "nlist": self.nlist}

    def _after_load(self) -> None:
        # Every call passes all nlist cells' slots; the ones not to scan are -1
        # (FAISS skips them). nprobe never changes afterwards, so concurrent
        # searches share the index safely.
        self.index_.nprobe = self.index_.nlist
        self._cells_key = None
        if self.index_.ntotal:
            self._cells()  # when opened, not on the first query

    def _from_factory(self, factory, codes):
        index = super()._from_factory(factory, codes)
        index.nprobe = index.nlist
        return index

    def add(self, codes) -> None:
        super().add(codes)
        self.index_.nprobe = self.index_.nlist

    @classmethod
    def combine(cls, parts):
        base = super().combine(parts)
        base._cells()
        return base

    def _cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(centroids, radii, sizes, cell of each position, codes by position)``, from the inverted lists.

        Computed once when the index is opened, combined or has grown (under a
        lock: a server's threads share the index); read without changing the
        FAISS index (no direct map).
        """
        key = (id(self.index_), int(self.index_.ntotal))
        if self._cells_key == key:
            return self._cells_data
        with self._cells_lock:
            if self._cells_key == key:
                return self._cells_data
            ivf = self.index_
            nlist, width, n = int(ivf.nlist), int(ivf.code_size), int(ivf.ntotal)
            quantizer = faiss.downcast_IndexBinary(ivf.quantizer)
            centroids = faiss.vector_to_array(quantizer.xb).reshape(nlist, width)
            # Distances to the centroids by 64-bit words (popcounts of 8-byte words, not of bytes).
            self._word = np.uint64 if width % 8 == 0 else np.uint8
            lists = ivf.invlists
            sizes = np.array([lists.list_size(c) for c in range(nlist)], dtype=np.int64)
            radii = np.full(nlist, -1, np.int32)
            cell_of = np.zeros(n, np.int32)
            by_position = np.zeros((n, width), np.uint8)
            for c in np.flatnonzero(sizes):
                size = int(sizes[c])
                codes = faiss.rev_swig_ptr(lists.get_codes(int(c)), size * width).reshape(size, width)
                ids = faiss.rev_swig_ptr(lists.get_ids(int(c)), size)
                radii[c] = np.bitwise_count(codes ^ centroids[c]).sum(axis=1, dtype=np.int32).max()
                cell_of[ids] = c
                by_position[ids] = codes
            self._cells_data = (centroids.view(self._word), radii, sizes, cell_of, by_position)
            self._cells_key = key
        return self._cells_data

    def stored(self) -> np.ndarray:
        # From the lists, by position: FAISS' reconstruct would add a direct map to the shared index.
        return np.zeros((0, 0), np.uint8) if self.index_ is None else self._cells()[4]

    def settled(self) -> "VectorIndex":
        """Cells learned from every stored code when a build trained them on a sample too small for its size.

        The search is exact whatever the cells; good cells only make it scan
        less. A build trains them on its training sample (``--train-sample``)
        before any row is added; once the collection is encoded, its own
        codes (a seeded sample of ``64 * nlist``) give the cells a collection
        of this size warrants.
        """
        n = len(self)
        if self.nlist is not None or self.index_ is None or self.index_.nlist >= self.cells_for(n):
            return self
        codes = self.stored()
        other = type(self)(**self._params())
        other.train(codes, n)
        other.add(codes)
        return other

    def _assign(self, cells: np.ndarray, nlist: int) -> np.ndarray:
        row = np.full((1, nlist), -1, np.int64)
        row[0, :len(cells)] = cells
        return row

    def _live_sizes(self, deletions: Deletions | None) -> np.ndarray:
        """Kept rows per cell (counted once per set of removed rows and cells)."""
        sizes, cell_of = self._cells()[2], self._cells()[3]
        if deletions is None:
            return sizes
        counted = deletions.live_cells.get(self._cells_key)
        if counted is None:
            counted = np.bincount(cell_of[deletions.alive()], minlength=len(sizes))
            deletions.live_cells = {self._cells_key: counted}
        return counted

    def _search_one(self, query: np.ndarray, k: int, alive: np.ndarray | None,
                    live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hamming distances and positions of one query's ``k`` best kept codes, best first.

        Args:
            alive: Kept rows (``None``: all), as :meth:`Deletions.alive`.
            live: Kept rows per cell.
        """
        centroids, radii = self._cells()[:2]
        nlist, bits = len(live), int(self.index_.d)
        query = query[None]
        to_cell = np.bitwise_count(centroids ^ query.view(self._word)).sum(axis=1, dtype=np.int32)
        # First pass: the nearest cells holding at least k kept codes (FIRST_CELLS at least)
        # bound the k-th distance from above.
        first = np.argpartition(to_cell, min(FIRST_CELLS, nlist - 1))[:FIRST_CELLS]
        if live[first].sum() < k:
            order = np.argsort(to_cell, kind="stable")
            first = order[:int(np.searchsorted(np.cumsum(live[order]), k)) + 1]
        if alive is None:
            distances, positions = self.index_.search_preassigned(query, k, self._assign(first, nlist), None)
            bound = int(distances[0, k - 1]) if positions[0, k - 1] >= 0 else bits
        else:  # every code of those cells, the removed ones dropped
            _, distances, positions = self.index_.range_search_preassigned(query, bits + 1,
                                                                           self._assign(first, nlist), None)
            distances = distances[alive[positions]]
            bound = int(np.partition(distances, k - 1)[k - 1]) if len(distances) >= k else bits
        # Second pass: every code within the bound, from exactly the cells that can hold one.
        need = np.flatnonzero((to_cell - radii <= bound) & (live > 0))
        _, distances, positions = self.index_.range_search_preassigned(query, bound + 1,
                                                                       self._assign(need, nlist), None)
        if alive is not None:
            keep = alive[positions]
            distances, positions = distances[keep], positions[keep]
        order = np.lexsort((positions, distances))[:k]
        return distances[order], positions[order]

    def _search_many(self, queries: np.ndarray, k: int, alive, live) -> tuple[np.ndarray, np.ndarray]:
        distances = np.full((len(queries), k), np.inf, np.float32)
        positions = np.full((len(queries), k), -1, np.int64)
        for qi, query in enumerate(queries):
            d, p = self._search_one(query, k, alive, live)
            distances[qi, :len(d)], positions[qi, :len(p)] = d, p
        return distances, positions

    def _search(self, queries, k: int, deletions: Deletions | None) -> tuple[np.ndarray, np.ndarray]:
        k = min(check_k(k), len(self))
        queries = self._prepare(queries)
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        alive = None if deletions is None or not len(deletions) else deletions.alive()
        live = self._live_sizes(None if alive is None else deletions)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query at a time: FAISS would start a team per call
        try:
            if len(queries) <= SINGLE_THREAD_QUERIES or threads < 2:
                distances, positions = self._search_many(queries, k, alive, live)
            else:  # a batch: its queries spread over the scan pool's threads
                chunks = np.array_split(np.arange(len(queries)), threads)
                found = list(_scan_pool(threads).map(lambda rows: self._search_many(queries[rows], k, alive, live),
                                                     chunks))
                distances = np.concatenate([d for d, _ in found])
                positions = np.concatenate([p for _, p in found])
        finally:
            faiss.omp_set_num_threads(threads)
        return -distances, positions

    def search(self, queries, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        if params is not None:  # _search_parameters gives none: rows are skipped by search_live
            raise TypeError("BinaryPrunedIndex.search takes no FAISS search parameters")
        return self._search(queries, k, None)

    def search_live(self, queries, k: int, deletions: Deletions | None) -> tuple[np.ndarray, np.ndarray]:
        scores, positions = self._search(queries, k, deletions)
        scores[positions < 0] = -np.inf
        return scores, positions

    def within(self, query, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code within Hamming ``radius`` of one query, nearest first: exact, from the cells that can hold one."""
        query = self._prepare(query)[:1]
        centroids, radii, sizes = self._cells()[:3]
        to_cell = np.bitwise_count(centroids ^ query.view(self._word)).sum(axis=1, dtype=np.int32)
        need = np.flatnonzero((to_cell - radii <= int(radius)) & (sizes > 0))
        _, distances, positions = self.index_.range_search_preassigned(query, int(radius) + 1,
                                                                       self._assign(need, len(sizes)), None)
        order = np.lexsort((positions, distances))
        return -distances[order].astype(np.float32), positions[order].astype(np.int64)


class PQIndex(FaissIndex):
    """Product quantisation (``IndexPQ``): ``groups`` bytes per item, searched with the query kept float.

    Each item is stored as the indices of the nearest of 256 centroids in
    each of ``groups`` slices of its vector; a query's distance to an item
    is the sum of per-slice table look-ups (asymmetric distance). The
    centroids are either learned here by k-means of the training codes (the
    PQ baselines ``pq-ae``, ``pq-lsa``, ``pq-pca``) or given: the codebook a
    VQ autoencoder learned (:meth:`train` with ``codebook``). Distances are
    squared L2; for ``metric="cosine"`` vectors and queries are normalised
    and the score is ``1 - d / 2`` (the cosine for an exact reconstruction).

    Args:
        metric: ``"cosine"`` or ``"l2"``.
        groups: Slices (bytes per item); must divide the dimension.
    """

    kind = "pq"
    trained = True

    def __init__(self, metric: str = "l2", groups: int = 8) -> None:
        super().__init__(metric)
        self.groups = groups

    def _params(self) -> dict:
        return {"metric": self.metric, "groups": self.groups}

    def _faiss_metric(self) -> int:
        return faiss.METRIC_L2  # the codes are nearest centroids in L2; cosine comes from normalising

    def _factory_string(self, n, d):
        return f"PQ{self.groups}x8"

    def _empty(self, d: int):
        if d % self.groups:
            raise InputError(f"a {d}-d code does not split into {self.groups} groups; "
                             f"use a dimension that is a multiple of {self.groups}")
        self.factory_ = self._factory_string(0, d)
        index = faiss.IndexPQ(d, self.groups, 8, faiss.METRIC_L2)
        # Few training rows are fine (tests, small collections): no FAISS warning on stderr.
        index.pq.cp.min_points_per_centroid = 1
        return index

    def _from_factory(self, factory, codes):
        index = self._empty(codes.shape[1])
        if len(codes) < index.pq.ksub:  # k-means needs a point per centroid: repeat the rows
            codes = np.resize(codes, (index.pq.ksub, codes.shape[1]))
        index.train(codes)
        return index

    def train(self, codes, n_items: int, codebook=None) -> None:
        """Learn the centroids from ``codes`` (k-means per slice), or take a learned ``codebook``.

        Args:
            codes: Training vectors ``(n, d)``.
            n_items: Items the index will hold (unused: PQ's size does not depend on it).
            codebook: ``(groups, K, d / groups)`` centroids, ``K <= 256``
                (a VQ autoencoder's); padded to 256 with far-away entries
                that no vector is ever nearest to.
        """
        if codebook is None:
            return super().train(codes, n_items)
        codebook = np.asarray(codebook, dtype=np.float32)
        groups, size, width = codebook.shape
        if groups != self.groups:
            raise InputError(f"the codebook has {groups} groups but the index {self.groups}")
        index = self._empty(groups * width)
        far = np.full((groups, index.pq.ksub - size, width), 1e6, dtype=np.float32)
        full = np.concatenate([codebook, far], axis=1)
        faiss.copy_array_to_vector(np.ascontiguousarray(full).ravel(), index.pq.centroids)
        index.is_trained = True
        self.index_ = index

    def search(self, queries, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        k = min(check_k(k), len(self))
        distances, positions = _faiss_search(self.index_, self._prepare(queries), k, params)
        if self.metric == "cosine":
            return (1 - distances / 2).astype(np.float32), positions
        return -np.sqrt(np.maximum(distances, 0)), positions

    def _search_parameters(self, selector):
        return None  # FAISS 1.15: IndexPQ's search takes no IDSelector

    def codes(self) -> np.ndarray:
        """The stored codes: ``(n, groups)`` uint8 centroid indices."""
        if self.index_ is None:
            return np.zeros((0, self.groups), np.uint8)
        return faiss.vector_to_array(self.index_.codes).reshape(-1, self.index_.code_size)

    @classmethod
    def combine(cls, parts):
        base = parts[0]
        for part in parts[1:]:
            base.index_.merge_from(part.index_, 0)  # a flat code array: positions follow
        return base


BACKENDS: dict[str, type[VectorIndex]] = {
    cls.kind: cls for cls in (FlatIndex, IVFIndex, HNSWIndex, SparseIndex, BinaryFlatIndex, BinaryIVFIndex,
                BinaryPrunedIndex, PQIndex)
}


def make_index(kind: str, metric: str, n_items: int, sparse: bool = False,
               pq_groups: int | None = None) -> VectorIndex:
    """Choose a backend.

    Args:
        kind: ``"auto"``, ``"flat"``, ``"ivf"`` or ``"hnsw"``. ``"auto"`` is
            exact below :data:`APPROX_THRESHOLD` items and HNSW above; for
            binary codes exact below :data:`BINARY_APPROX_THRESHOLD` and
            binary IVF above. Exact binary search of at least
            :data:`PRUNED_SCAN_CODES` codes is :class:`BinaryPrunedIndex`.
        metric: ``"cosine"``, ``"l2"`` or ``"hamming"`` (packed binary codes).
        n_items: Number of items that will be added.
        sparse: The codes are sparse (TF-IDF): always the exact sparse index.
        pq_groups: Bytes per item of a product-quantisation index
            (:class:`PQIndex`; VQ codes and the PQ baselines), whatever ``kind``.

    Returns:
        An empty index.
    """
    if kind not in INDEX_KINDS:
        raise InputError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
    if sparse:
        return SparseIndex(metric)
    if pq_groups:
        return PQIndex(metric, pq_groups)
    if metric == "hamming":
        if kind == "hnsw":
            raise InputError("--index hnsw is for float codes; binary codes use flat, ivf or auto")
        if kind == "auto":
            kind = "ivf" if n_items > BINARY_APPROX_THRESHOLD else "flat"
        if kind == "flat" and n_items >= PRUNED_SCAN_CODES:
            return BinaryPrunedIndex(metric)  # exact as the flat scan, a fraction of its work
        return BACKENDS[f"binary-{kind}"](metric)
    if kind == "auto":
        kind = "hnsw" if n_items > APPROX_THRESHOLD else "flat"
    return BACKENDS[kind](metric)


def load_index(kind: str, folder: Path, metric: str, search: dict | None = None,
               factory: str | None = None) -> VectorIndex:
    """Load a backend of the given kind from ``folder``.

    Args:
        kind: The backend's ``kind`` as saved in the manifest.
        folder: The method's folder.
        metric: ``"cosine"``, ``"l2"`` or ``"hamming"``.
        search: The search parameters saved with it (:meth:`VectorIndex.search_params`).
        factory: The FAISS factory string saved with it.
    """
    if kind not in BACKENDS:
        raise IndexFormatError(f"unknown index backend {kind!r} in {folder}; rebuild the index")
    try:
        index = BACKENDS[kind].load(folder, metric, **(search or {}))
    except TypeError as exc:
        raise IndexFormatError(f"search parameters {search!r} of {folder} do not fit a {kind!r} index "
                               f"({exc}); rebuild the index") from None
    if factory and hasattr(index, "factory_"):
        index.factory_ = factory
    return index


def empty_index(kind: str, folder: Path, metric: str, search: dict | None = None, factory: str | None = None,
                source=None) -> VectorIndex:
    """An empty index for a new segment of a method: its template for IVF kinds, else a fresh backend.

    Args:
        kind, metric, search, factory: As the manifest records them (see :func:`load_index`).
        folder: The method's folder (where the template lives).
        source: ``() -> an index of the method`` to take the template from when the
            method has no template file (an index written before segments existed).

    Raises:
        IndexFormatError: An IVF method without template and no ``source``.
    """
    if kind not in BACKENDS:
        raise IndexFormatError(f"unknown index backend {kind!r} in {folder}; rebuild the index")
    cls = BACKENDS[kind]
    if not cls.trained:
        index = cls(metric, **(search or {}))
        if hasattr(index, "factory_"):
            index.factory_ = factory
        return index
    index = cls.load_template(folder, metric, search or {}, factory)
    if index is None:
        if source is None:
            raise IndexFormatError(f"{folder} lacks the trained {kind} template of its segments; rebuild the index")
        index = source().template()
    return index


def merge(template: VectorIndex, parts: list[tuple[VectorIndex, np.ndarray]]) -> VectorIndex:
    """Fill ``template`` with the given rows of each part, in order (a compaction: nothing is re-encoded).

    Args:
        template: An empty index of the method (:func:`empty_index`).
        parts: ``(index, rows to keep)`` per merged segment.
    """
    blocks = [index.stored()[np.asarray(rows, dtype=np.int64)] for index, rows in parts if len(rows)]
    if blocks:
        template.add(sp.vstack(blocks).tocsr() if sp.issparse(blocks[0]) else np.concatenate(blocks))
    return template


class SegmentedIndex:
    """One method's index over every segment: the interface of :class:`VectorIndex` for searching.

    Segments are immutable on disk; in memory, the indexes that can be
    concatenated cheaply (flat scans, the TF-IDF matrix, IVF lists of the
    shared cells: :meth:`VectorIndex.combine`) are joined into one when
    opened, so a query costs what it costs on one compacted segment, and the
    removed rows of every segment are skipped during the scan
    (:meth:`VectorIndex.search_live`). A graph (HNSW) cannot be joined: each
    segment's is searched for ``k`` results, and the best ``k`` of all are
    kept by score (ties: earlier segment first). Either way an exact backend
    gives exactly the ranking one index over the same codes gives.

    Args:
        parts: Each segment's index, in manifest order.
        segments: The :class:`~retrieval.storage.segments.Segments` they belong to.
        kind, metric, search: The method's backend, as the manifest records it.
    """

    def __init__(self, parts: list[VectorIndex], segments, kind: str, metric: str, search: dict | None) -> None:
        self.segments = segments
        self.kind = kind
        self.metric = metric
        self._proto = BACKENDS[kind](metric, **(search or {}))
        self.binary = self._proto.binary
        marks, sizes = list(segments.deleted), [int(n) for n in segments.sizes]
        if self._proto.combinable and len(parts) > 1:
            rows = np.concatenate([[0], np.cumsum(sizes)])
            marks = [np.concatenate([m + rows[s] for s, m in enumerate(marks)]).astype(np.int64)]
            parts, sizes = [type(parts[0]).combine(parts)], [int(rows[-1])]
        self.parts = parts
        #: Per part: its removed rows, the position of its first kept row, what skips the removed rows.
        self._marks = marks
        self._starts = np.concatenate([[0], np.cumsum([n - len(m) for n, m in zip(sizes, marks)])]).astype(np.int64)
        self._deletions = [Deletions(m, n) if len(m) else None for m, n in zip(marks, sizes)]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _prepare(self, codes):
        return self._proto._prepare(codes)

    @property
    def factory(self) -> str | None:
        return getattr(self.parts[0], "factory", None) if self.parts else None

    def search_params(self) -> dict:
        return self._proto.search_params()

    @property
    def bits(self) -> int:
        return self.parts[0].bits if self.parts else 0

    def _positions(self, p: int, rows) -> np.ndarray:
        return rows_to_positions(rows, self._marks[p], int(self._starts[p]))

    def _rows(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """``(part, row in the part)`` of each position."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        part = np.searchsorted(self._starts, positions, side="right") - 1
        rows = positions - self._starts[part]
        for p in np.unique(part):
            rows[part == p] = positions_to_rows(rows[part == p], self._marks[p])
        return part, rows

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = check_k(k)
        scores, positions = [], []
        for p, part in enumerate(self.parts):
            live = int(self._starts[p + 1] - self._starts[p])
            if not live:
                continue
            part_scores, rows = part.search_live(queries, min(k, live), self._deletions[p])
            where = self._positions(p, rows)
            scores.append(np.where(where >= 0, part_scores, -np.inf).astype(np.float32))
            positions.append(where)
        return self._merge(queries.shape[0], k, scores, positions)

    def search_rows(self, queries, k: int, positions, exact_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` among the given positions only (see :meth:`VectorIndex.search_rows`)."""
        k = check_k(k)
        part, rows = self._rows(positions)
        scores, found = [], []
        for p, index in enumerate(self.parts):
            mine = rows[part == p]
            if not len(mine):
                continue
            part_scores, part_rows = index.search_rows(queries, k, mine, exact_items)
            where = self._positions(p, part_rows)
            scores.append(np.where(where >= 0, part_scores, -np.inf).astype(np.float32))
            found.append(where)
        return self._merge(queries.shape[0], k, scores, found)

    def _merge(self, n_queries: int, k: int, scores: list, positions: list) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of every part's results by score (ties: the earlier part, so the smaller position)."""
        if not scores:
            return np.zeros((n_queries, 0), np.float32), np.zeros((n_queries, 0), np.int64)
        if len(scores) == 1:
            return scores[0], positions[0]
        scores, positions = np.concatenate(scores, axis=1), np.concatenate(positions, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :min(k, len(self))]
        scores, positions = np.take_along_axis(scores, order, axis=1), np.take_along_axis(positions, order, axis=1)
        positions[~np.isfinite(scores)] = -1
        return scores, positions

    def within(self, query, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Every code within Hamming ``radius`` of one query over every segment (see :meth:`BinaryIndex.within`)."""
        scores, positions = [], []
        for p, part in enumerate(self.parts):
            part_scores, rows = part.within(query, radius)
            where = self._positions(p, rows)
            scores.append(part_scores[where >= 0])
            positions.append(where[where >= 0])
        if not scores:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, positions = np.concatenate(scores), np.concatenate(positions)
        order = np.argsort(-scores, kind="stable")
        return scores[order], positions[order]

    def vectors(self, positions) -> np.ndarray:
        """The stored vectors at ``positions`` (see :meth:`FaissIndex.vectors`)."""
        part, rows = self._rows(positions)
        out = None
        for p in np.unique(part):
            at = np.flatnonzero(part == p)
            block = self.parts[p].vectors(rows[at])
            if out is None:
                out = np.empty((len(part), block.shape[1]), block.dtype)
            out[at] = block
        return out if out is not None else np.zeros((0, 0), np.float32)

    def stored(self):
        """Every stored row not removed, in position order."""
        blocks = []
        for p, part in enumerate(self.parts):
            keep = np.ones(len(part), bool)
            keep[self._marks[p]] = False
            blocks.append(part.stored()[np.flatnonzero(keep)])
        if not blocks:
            return np.zeros((0, 0), np.float32)
        return sp.vstack(blocks).tocsr() if sp.issparse(blocks[0]) else np.concatenate(blocks)
