"""Near-duplicate finding: candidates from the stored codes, verified by an aligned pixel correlation.

An autoencoder's codes are trained for *semantic* similarity: two different
shirts are as close as a shirt and its re-saved copy, and a brightness change
or a small crop moves a code further than the neighbouring shirt is (measured
on the planted set of ``benchmarks/duplicates_bench.py``: raw codes with one
radius found 39 % of the copies at 64 % precision). So the work is split the
way near-duplicate detectors usually split it:

1. **Candidates**: the ``candidates`` nearest stored codes of each item
   (FAISS search of the index's own codes), or every item within
   ``radius`` of it (code distance, FAISS range search); for images also
   the ``candidates`` nearest plain signatures (a FAISS flat index of them,
   built in memory on first use): the codes move with brightness, the
   signatures do not.
2. **Verification** of each candidate pair by its *signature*, computed from
   the stored model inputs (the index keeps them; no new per-item file):

   * images: the normalised cross-correlation (NCC) of grey, lightly
     smoothed, 16 x 16 thumbnails, zero-mean and unit-norm, so invariant to a
     brightness or contrast change; the pair's score is the best NCC over a
     small family of alignments of either image (zooms of up to 10 % and
     shifts of a pixel of the stored side, :data:`ALIGNMENTS`), which absorbs
     small crops and one-pixel shifts. JPEG re-compression and resizing
     change a thumbnail little.
   * documents: the cosine of the stored TF-IDF rows.

   A pair whose contrasts no brightness edit explains scores 0
   (:func:`photometric_ok`: two smooth gradients correlate perfectly once
   normalised). A pair is a duplicate when its score is at least ``threshold``
   (:data:`~retrieval.config.DUPLICATES_THRESHOLD`, chosen on a validation
   planted set). Groups are the connected components of the duplicate
   pairs.

``check`` runs the same two steps for one new file: encode it with the NumPy
forward pass, take its nearest stored codes, verify them.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import DUPLICATES_CANDIDATES, DUPLICATES_THRESHOLD
from ..errors import InputError

#: Side of the thumbnail an image signature correlates (16 x 16 = 256 values).
GRID = 16
#: Alignments tried per pair: the fraction of the stored side the window keeps (a zoom-in, as a crop makes)
#: and its centre's shift in pixels of the stored side. 3 x 5 x 5 = 75, the identity first.
ZOOMS = (1.0, 0.95, 0.9)
SHIFTS = (0.0, -0.5, 0.5, -1.0, 1.0)
ALIGNMENTS = tuple((z, dy, dx) for z in ZOOMS for dy in SHIFTS for dx in SHIFTS)
#: A copy's contrast (standard deviation of its thumbnail) is at most this many times its original's ...
MAX_CONTRAST_RATIO = 1.6
#: ... and its log ratio is within this of 0 or of the log ratio of the means (:func:`photometric_ok`).
PHOTOMETRIC_TOLERANCE = 0.15
#: Luma weights of the grey conversion (ITU-R BT.601, as Pillow's ``L``).
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def check_threshold(threshold: float) -> float:
    """A verification threshold must lie in ``(0, 1]`` (a correlation or a cosine)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"--threshold must be a number in (0, 1]; got {threshold!r}") from None
    if not 0 < value <= 1:
        raise InputError(f"--threshold must be in (0, 1] (1: identical after alignment); got {threshold!r}")
    return value


def check_candidates(candidates) -> int:
    """Candidates per item: a positive whole number."""
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) or candidates < 1:
        raise InputError(f"--candidates must be a positive number of nearest codes per item; got {candidates!r}")
    return int(candidates)


def check_radius(radius) -> float | None:
    """A code radius is positive (cosine distance ``1 - cos`` for float codes, bits for binary codes)."""
    if radius is None:
        return None
    try:
        value = float(radius)
    except (TypeError, ValueError):
        raise InputError(f"--radius must be a positive number; got {radius!r}") from None
    if not value > 0:
        raise InputError(f"--radius must be positive (code distance: 1 - cosine, or Hamming bits); got {radius!r}")
    return value


# -- image signatures ------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _sampler(side: int, zoom: float, shift: float) -> np.ndarray:
    """``(GRID, side)`` matrix: smooth a stored row of ``side`` pixels and sample a window of it.

    The window keeps ``zoom`` of the side, centred ``shift`` pixels off the
    middle; each of the ``GRID`` outputs averages the input over its cell
    (area weights, so a 32 or 28 pixel side is low-passed before sampling
    and a small misalignment changes the thumbnail little).
    """
    width = side * zoom
    lo = (side - width) / 2 + shift
    cell = width / GRID
    # area weights of the cells over the side extended by a few pixels each way; what falls outside the
    # image is read from its edge pixel (a shifted window repeats the border, as a one-pixel shift does)
    pad = int(np.ceil(abs(shift))) + 1
    edges = lo + cell * np.arange(GRID + 1)
    x = np.arange(-pad, side + pad)
    overlap = np.clip(np.minimum(edges[1:, None], x[None] + 1) - np.maximum(edges[:-1, None], x[None]), 0, None)
    folded = np.zeros((GRID, side))
    np.add.at(folded.T, np.clip(x, 0, side - 1), overlap.T)
    overlap = folded / folded.sum(axis=1, keepdims=True)
    blur = np.eye(GRID) * 2 + np.eye(GRID, k=1) + np.eye(GRID, k=-1)
    blur /= blur.sum(axis=1, keepdims=True)
    return (blur @ overlap).astype(np.float32)


def _grey(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        return pixels.astype(np.float32)
    if pixels.shape[-1] == 1:
        return pixels[..., 0].astype(np.float32)
    return pixels[..., :3].astype(np.float32) @ _LUMA


def _normalise(thumbs: np.ndarray) -> np.ndarray:
    flat = thumbs.reshape(thumbs.shape[:-2] + (-1,))
    flat = flat - flat.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(flat, axis=-1, keepdims=True)
    # a flat image (all one colour) has no pattern to correlate: a zero signature matches nothing
    return np.where(norm > 1e-3, flat / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def image_stats(pixels: np.ndarray) -> np.ndarray:
    """``(n, 2)`` log mean and log standard deviation of each stored image's grey thumbnail."""
    grey = _grey(pixels)
    ry, rx = _sampler(grey.shape[1], 1.0, 0.0), _sampler(grey.shape[2], 1.0, 0.0)
    thumbs = (ry @ grey @ rx.T).reshape(len(grey), -1)
    return np.log(np.maximum(np.stack([thumbs.mean(axis=1), thumbs.std(axis=1)], axis=1), 1e-3)).astype(np.float32)


def photometric_ok(stats_a: np.ndarray, stats_b: np.ndarray) -> np.ndarray:
    """Whether two images' brightness and contrast can differ by an edit of one of them.

    Normalising a thumbnail makes any two smooth gradients (two tiles of
    one sky) correlate perfectly; their contrasts differ, though, while a
    copy's contrast changes at most by :data:`MAX_CONTRAST_RATIO`, and then
    with its brightness (a brightness edit scales both): the ratio of
    standard deviations is either near 1 or near the ratio of means.
    """
    d_mean = stats_b[..., 0] - stats_a[..., 0]
    d_std = stats_b[..., 1] - stats_a[..., 1]
    return (np.abs(d_std) <= np.log(MAX_CONTRAST_RATIO)) & (np.minimum(np.abs(d_std), np.abs(d_std - d_mean))
                                                           <= PHOTOMETRIC_TOLERANCE)


def image_signatures(pixels: np.ndarray, alignments=ALIGNMENTS[:1]) -> np.ndarray:
    """Signatures of stored images ``(n, s, s[, c])``: ``(n, len(alignments), GRID * GRID)`` float32, unit norm.

    The first alignment (the default, alone) is the image as stored.
    """
    grey = _grey(pixels)
    side_y, side_x = grey.shape[1:3]
    out = np.empty((len(grey), len(alignments), GRID * GRID), np.float32)
    for a, (zoom, dy, dx) in enumerate(alignments):
        ry, rx = _sampler(side_y, zoom, dy), _sampler(side_x, zoom, dx)
        out[:, a] = _normalise(ry @ grey @ rx.T)
    return out


def aligned_scores(pixels: np.ndarray, plain: np.ndarray, pairs: np.ndarray, *, block: int = 256) -> np.ndarray:
    """Score of each pair ``(a, b)``: the best NCC of one image, aligned, with the other as stored.

    Args:
        pixels: The stored images, indexed by the pair positions (an array or a memory map).
        plain: Their unaligned signatures ``(n, GRID * GRID)``.
        pairs: ``(m, 2)`` positions.
        block: Items whose aligned signatures are computed at a time (memory: block x 75 x 4 x GRID² bytes).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    scores = np.full(len(pairs), -1.0, np.float32)
    if not len(pairs):
        return scores
    # both directions: a aligned against b as stored, and b aligned against a
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    row = np.concatenate([np.arange(len(pairs))] * 2)
    order = np.argsort(src, kind="stable")
    src, dst, row = src[order], dst[order], row[order]
    items, first = np.unique(src, return_index=True)
    bounds = np.append(first, len(src))
    for start in range(0, len(items), block):
        chunk = items[start:start + block]
        aligned = image_signatures(pixels[chunk], ALIGNMENTS)  # (c, alignments, G*G)
        for j in range(len(chunk)):
            # one small product per item: its aligned signatures against its partners' plain ones
            lo, hi = bounds[start + j], bounds[start + j + 1]
            best = (aligned[j] @ plain[dst[lo:hi]].T).max(axis=0)
            np.maximum.at(scores, row[lo:hi], best)
    return scores


# -- documents -----------------------------------------------------------------------------
def document_scores(rows, pairs: np.ndarray) -> np.ndarray:
    """Cosine of the stored TF-IDF rows of each pair."""
    import scipy.sparse as sp

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return np.zeros(0, np.float32)
    rows = sp.csr_matrix(rows, dtype=np.float32)
    norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
    rows = sp.diags(1 / np.maximum(norms, 1e-12)) @ rows
    a, b = rows[pairs[:, 0]], rows[pairs[:, 1]]
    return np.asarray(a.multiply(b).sum(axis=1), dtype=np.float32).ravel()


# -- results -----------------------------------------------------------------------------------
@dataclass
class Duplicate:
    """One stored item in a group (or one match of a checked file)."""

    id: str
    title: str
    label: str | None
    path: str
    position: int
    score: float | None = None


@dataclass
class DuplicateGroups:
    """Groups of near-duplicate items of an index.

    Attributes:
        groups: Lists of :class:`Duplicate`, largest group first; each item's
            ``score`` is its best score with another member.
        pairs: Duplicate pairs ``(position a, position b, score)`` found.
        items: Items in the index.
        candidates_checked: Candidate pairs verified.
        threshold, candidates, radius: The settings used.
        seconds: Time taken.
    """

    groups: list[list[Duplicate]]
    pairs: list[tuple[int, int, float]]
    items: int
    candidates_checked: int
    threshold: float
    candidates: int | None
    radius: float | None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"items": self.items, "groups": [[asdict(d) for d in g] for g in self.groups],
                "duplicate_items": sum(len(g) for g in self.groups), "pairs": len(self.pairs),
                "candidates_checked": self.candidates_checked, "threshold": self.threshold,
                "candidates": self.candidates, "radius": self.radius, "seconds": round(self.seconds, 3)}


@dataclass
class CheckResult:
    """The stored near-duplicates of one new file, best first."""

    query: str
    matches: list[Duplicate] = field(default_factory=list)
    threshold: float = DUPLICATES_THRESHOLD
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"query": self.query, "duplicate": bool(self.matches), "matches": [asdict(m) for m in self.matches],
                "threshold": self.threshold, "seconds": round(self.seconds, 4)}


def components(n_nodes: int, pairs: np.ndarray) -> list[np.ndarray]:
    """Connected components (of two or more nodes) of an undirected graph, largest first."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if not len(pairs):
        return []
    graph = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    sizes = np.bincount(label)
    groups = [np.flatnonzero(label == g) for g in np.flatnonzero(sizes > 1)]
    groups.sort(key=lambda g: (-len(g), int(g[0])))
    return groups


class DuplicateFinder:
    """Near-duplicates of an opened index (:class:`~retrieval.search.retriever.Retriever`).

    Keeps the stored codes' index, the stored inputs and their signatures in
    memory after first use, so repeated :meth:`check` calls cost one encode,
    one search and one verification.

    Args:
        retriever: The opened index.
        method: The method whose stored codes give the candidates (default: the autoencoder).
    """

    def __init__(self, retriever, method: str | None = None) -> None:
        self.retriever = retriever
        self.method_name = method or retriever.default_method
        self._plain = None
        self._stats = None
        self._stamp = None

    # -- stored data -----------------------------------------------------------------------
    def _fresh(self) -> None:
        if self.retriever.refresh() or self._stamp is not self.retriever.segments:
            self._plain = self._stats = None
            self._stamp = self.retriever.segments

    @property
    def inputs(self):
        return self.retriever.inputs("duplicates")

    @property
    def pictures(self) -> bool:
        return bool(self.retriever.modality.pictures)

    def plain(self) -> np.ndarray | None:
        """Unaligned signatures of every stored image (``None`` for documents)."""
        self._fresh()
        if self._plain is None and self.pictures:
            inputs = self.inputs
            self._plain = np.concatenate([image_signatures(inputs[i:i + 4096])[:, 0]
                                          for i in range(0, len(inputs), 4096)]) if len(inputs) else \
                np.zeros((0, GRID * GRID), np.float32)
        return self._plain

    def stats(self) -> np.ndarray:
        """Log mean and log contrast of every stored image (:func:`image_stats`)."""
        self._fresh()
        if self._stats is None:
            inputs = self.inputs
            self._stats = np.concatenate([image_stats(inputs[i:i + 4096]) for i in range(0, len(inputs), 4096)]) \
                if len(inputs) else np.zeros((0, 2), np.float32)
        return self._stats

    def verify(self, pairs: np.ndarray) -> np.ndarray:
        """Scores of stored pairs ``(m, 2)`` (images: 0 where :func:`photometric_ok` says no edit explains them)."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if not self.pictures:
            return document_scores(self.inputs, pairs)
        stats = self.stats()
        ok = photometric_ok(stats[pairs[:, 0]], stats[pairs[:, 1]])
        scores = np.zeros(len(pairs), np.float32)
        scores[ok] = aligned_scores(self.inputs, self.plain(), pairs[ok])
        return scores

    # -- candidates ---------------------------------------------------------------------------
    def _codes(self):
        """``(encoder, index, every stored code in position order)``."""
        encoder, index = self.retriever.method(self.method_name)
        try:
            codes = index.stored()
        except (AttributeError, NotImplementedError, RuntimeError):  # a backend that cannot give its rows back
            codes = encoder.transform(self.inputs)
        return encoder, index, codes

    def candidate_pairs(self, k: int, radius: float | None = None) -> np.ndarray:
        """Candidate pairs ``(a < b)`` from the stored codes: k nearest, or every code within ``radius``."""
        encoder, index, codes = self._codes()
        n = len(index)
        if n < 2:
            return np.zeros((0, 2), np.int64)
        if radius is not None:
            rows, cols = self._within(index, codes, radius)
        else:
            _, positions = index.search(codes, min(k + 1, n))
            rows = np.repeat(np.arange(n), positions.shape[1])
            cols = positions.reshape(-1)
        if self.pictures:
            # the codes move with brightness (measured on the planted photo test set: with code candidates
            # alone 58 % of the brightened copies were found, 94 % with these); the plain signatures do not
            _, near = self._signature_index().search(self.plain(), min(k + 1, n))
            rows = np.concatenate([rows, np.repeat(np.arange(n), near.shape[1])])
            cols = np.concatenate([cols, near.reshape(-1)])
        keep = (cols >= 0) & (rows != cols)
        a, b = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
        return np.unique(np.stack([a, b], axis=1), axis=0)

    def _signature_index(self):
        """A FAISS inner-product index of every plain signature, built once per opened index version."""
        import faiss

        plain = self.plain()
        if getattr(self, "_sig_index", None) is None or self._sig_index[0] is not plain:
            index = faiss.IndexFlatIP(plain.shape[1])
            index.add(np.ascontiguousarray(plain))
            self._sig_index = (plain, index)
        return self._sig_index[1]

    @staticmethod
    def _within(index, codes, radius: float) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if index.binary:
            rows, cols = [], []
            for i in range(len(codes)):
                _, pos = index.within(codes[i:i + 1], int(radius))
                rows.append(np.full(len(pos), i))
                cols.append(pos)
            return np.concatenate(rows), np.concatenate(cols)
        vectors = np.ascontiguousarray(codes, dtype=np.float32)
        if index.metric == "cosine":
            flat = faiss.IndexFlatIP(vectors.shape[1])
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            flat.add(vectors)
            lims, _, cols = flat.range_search(vectors, 1.0 - radius)  # inner product above 1 - radius
        else:
            flat = faiss.IndexFlatL2(vectors.shape[1])
            flat.add(vectors)
            lims, _, cols = flat.range_search(vectors, radius * radius)
        rows = np.repeat(np.arange(len(vectors)), np.diff(lims).astype(np.int64))
        return rows, cols.astype(np.int64)

    # -- the two commands ----------------------------------------------------------------------
    def groups(self, threshold: float = DUPLICATES_THRESHOLD, candidates: int = DUPLICATES_CANDIDATES,
               radius: float | None = None) -> DuplicateGroups:
        """Every group of near-duplicate items of the index."""
        import time

        started = time.perf_counter()
        threshold = check_threshold(threshold)
        radius = check_radius(radius)
        candidates = check_candidates(candidates)
        self._fresh()
        pairs = self.candidate_pairs(candidates, radius)
        scores = self.verify(pairs)
        keep = scores >= threshold
        found, found_scores = pairs[keep], scores[keep]
        n = len(self.retriever.segments)
        best = np.full(n, -np.inf, np.float32)
        np.maximum.at(best, found[:, 0], found_scores)
        np.maximum.at(best, found[:, 1], found_scores)
        groups = components(n, found)
        rows = {r["position"]: r for r in self.retriever.metadata.rows(np.concatenate(groups))} if groups else {}
        out = [[_duplicate(rows[int(p)], float(best[p])) for p in sorted(g, key=lambda p: (-best[p], p))]
               for g in groups]
        return DuplicateGroups(out, [(int(a), int(b), float(s)) for (a, b), s in zip(found, found_scores)], n,
                               len(pairs), threshold, None if radius is not None else candidates, radius,
                               time.perf_counter() - started)

    def check(self, query, threshold: float = DUPLICATES_THRESHOLD, candidates: int = DUPLICATES_CANDIDATES,
              name: str | None = None) -> CheckResult:
        """Stored near-duplicates of one new item (an image path, URL, bytes or array; a text)."""
        import time

        started = time.perf_counter()
        threshold = check_threshold(threshold)
        candidates = check_candidates(candidates)
        inputs = self.retriever.query_inputs([query])
        self._fresh()
        encoder, index = self.retriever.method(self.method_name)
        if not len(index):
            return CheckResult(name or str(query), [], threshold, time.perf_counter() - started)
        _, positions = index.search(encoder.transform(inputs), min(candidates, len(index)))
        positions = positions[0]
        if self.pictures:
            _, near = self._signature_index().search(image_signatures(inputs)[:, 0], min(candidates, len(index)))
            positions = np.unique(np.concatenate([positions, near[0]]))
        positions = positions[positions >= 0]
        scores = self.check_scores(inputs, positions)
        keep = scores >= threshold
        positions, scores = positions[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        rows = {r["position"]: r for r in self.retriever.metadata.rows(positions)} if len(positions) else {}
        matches = [_duplicate(rows[int(positions[i])], float(scores[i])) for i in order]
        return CheckResult(name or str(query), matches, threshold, time.perf_counter() - started)

    def check_scores(self, query_inputs, positions: np.ndarray) -> np.ndarray:
        """Scores of one query's model inputs against stored positions."""
        if not len(positions):
            return np.zeros(0, np.float32)
        if not self.pictures:
            import scipy.sparse as sp

            rows = sp.vstack([sp.csr_matrix(query_inputs, dtype=np.float32),
                              sp.csr_matrix(self.inputs[positions], dtype=np.float32)]).tocsr()
            return document_scores(rows, np.stack([np.zeros(len(positions), np.int64),
                                                   np.arange(1, len(positions) + 1)], axis=1))
        # only the candidates' signatures are computed: a check does not read every stored image
        stored = np.asarray(self.inputs[np.sort(positions)])[np.argsort(np.argsort(positions))]
        query = image_signatures(query_inputs, ALIGNMENTS)[0]          # (27, G*G)
        aligned = image_signatures(stored, ALIGNMENTS)                 # (k, 27, G*G)
        forward = (aligned[:, 0] @ query.T).max(axis=1)               # the query aligned to each stored image
        backward = (aligned @ query[0]).max(axis=1)                   # each stored image aligned to the query
        ok = photometric_ok(image_stats(query_inputs)[0], image_stats(stored))
        return np.where(ok, np.maximum(forward, backward), 0.0).astype(np.float32)


def _duplicate(row: dict, score: float | None) -> Duplicate:
    return Duplicate(id=row["id"], title=row["title"] or "", label=row["label"], path=row["path"] or "",
                     position=int(row["position"]), score=score)
