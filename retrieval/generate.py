"""The decoder as a generator: decode codes that no indexed item has.

Every index keeps its autoencoder's decoder (``methods/ae/decoder.keras``),
which runs in NumPy (:mod:`retrieval.encoders.autoencoder.numpy_graph`): no
TensorFlow is imported here unless a 2-d autoencoder is trained for the grid.

The codes are the decoder's own input, the encoder's raw outputs
(:meth:`~retrieval.encoders.autoencoder.base.KerasAutoencoder.decoder_codes`),
not the centred, whitened and L2-normalised vectors FAISS searches: those
lost their norm, which the decoder needs. They are recomputed from the stored
inputs of the items involved, so generation needs an index that kept them.

A binary index (``--bits``) decodes its +-1 bit codes, which its decoder was
trained on in the binary phase. A grid, a path or a sample lies between bit
codes: those points are real-valued codes no item has, decoded as the same
network decodes any vector (the result is a blend, as for float codes); no
bit code is rounded to.

The first half are pure functions of arrays (principal plane, grid,
interpolation, Gaussian sampling, top words); the second half applies them to
an opened :class:`~retrieval.search.Retriever`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import (GENERATE_GRID_PERCENTILES, GENERATE_GRID_STEPS, GENERATE_MAPS, GENERATE_PATH_STEPS, GENERATE_SEED,
                     MAP_EPOCHS, MAP_MAX_ITEMS, TOP_WORDS, Range)
from .errors import IndexFormatError, InputError
from .modality import DOCS, IMAGES

#: Said whenever a binary index's codes are decoded (see the module docstring).
BINARY_NOTE = ("binary index: decoding its +-1 bit codes (what its decoder was trained on); points between "
               "them are real-valued codes that no bit code equals")


# --------------------------------------------------------------------------
# Pure functions of codes
# --------------------------------------------------------------------------


def principal_plane(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first two principal directions of ``codes``.

    Args:
        codes: ``(n, d)`` codes, ``n >= 2``.

    Returns:
        ``(mean (d,), axes (2, d), coords (n, 2))``: the mean code, two
        orthonormal directions (each signed so its largest component is
        positive: the same codes always give the same picture) and each
        code's position on them. A code of one dimension gets a zero second axis.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise InputError(f"a principal plane needs at least 2 codes (n, d); got shape {codes.shape}")
    mean = codes.mean(axis=0)
    _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
    axes = np.zeros((2, codes.shape[1]))
    axes[:min(2, len(vt))] = vt[:2]
    for axis in axes:
        if axis[np.argmax(np.abs(axis))] < 0:
            axis *= -1
    return mean, axes, (codes - mean) @ axes.T


def grid_points(coords: np.ndarray, steps: int,
                percentiles: tuple[float, float] = GENERATE_GRID_PERCENTILES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An evenly spaced ``steps x steps`` grid over the range of 2-d positions.

    Args:
        coords: ``(n, 2)`` positions.
        steps: Points per side (>= 2).
        percentiles: Each axis spans these percentiles of the positions.

    Returns:
        ``(points (steps * steps, 2), xs, ys)``: the points row by row, the
        top row first (largest y, as a plot shows it), left to right; the
        grid's x values (increasing) and y values (decreasing).
    """
    Range("--steps", 2).check(steps)
    coords = np.asarray(coords, dtype=np.float64)
    low, high = np.percentile(coords, percentiles, axis=0)
    xs = np.linspace(low[0], high[0], steps)
    ys = np.linspace(high[1], low[1], steps)
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()]), xs, ys


def plane_to_codes(mean: np.ndarray, axes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Full codes of 2-d points on the principal plane: ``mean + points @ axes`` (float32)."""
    return (np.asarray(mean) + np.asarray(points) @ np.asarray(axes)).astype(np.float32)


def interpolate(start: np.ndarray, end: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` evenly spaced codes on the straight path from ``start`` to ``end``, both included."""
    Range("--steps", 2).check(steps)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    return ((1 - t) * start + t * end).astype(np.float32)


def gaussian_sample(codes: np.ndarray, n: int, seed: int = GENERATE_SEED) -> np.ndarray:
    """``n`` codes drawn from the Gaussian fitted to ``codes`` (their mean and covariance).

    Args:
        codes: ``(m, d)`` codes, ``m >= 2``.
        n: Codes to draw.
        seed: Seed of the draw.
    """
    Range("--sample", 1).check(n)
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise InputError(f"fitting a Gaussian needs at least 2 codes; got shape {codes.shape}")
    mean = codes.mean(axis=0)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    rng = np.random.default_rng(seed)
    # eigh, not Cholesky: a covariance of collinear codes is singular but still a covariance.
    return rng.multivariate_normal(mean, cov, size=n, method="eigh").astype(np.float32)


def top_words(distributions: np.ndarray, vocabulary: list[str], k: int = TOP_WORDS) -> list[list[tuple[str, float]]]:
    """The ``k`` most probable words of each decoded word distribution.

    Args:
        distributions: ``(n, vocabulary)`` decoder outputs (rows sum to 1).
        vocabulary: The vectorizer's terms in column order.
        k: Words per row.

    Returns:
        Per row, ``(word, probability)`` pairs, most probable first.
    """
    Range("-k", 1).check(k)
    distributions = np.atleast_2d(np.asarray(distributions))
    if distributions.shape[1] != len(vocabulary):
        raise InputError(f"decoder outputs have {distributions.shape[1]} columns but the vocabulary "
                         f"has {len(vocabulary)} terms")
    k = min(k, len(vocabulary))
    out = []
    for row in distributions:
        best = np.argpartition(-row, k - 1)[:k]
        best = best[np.argsort(-row[best], kind="stable")]
        out.append([(vocabulary[i], float(row[i])) for i in best])
    return out


def shared_words(first: np.ndarray, second: np.ndarray, vocabulary: list[str],
                 k: int = TOP_WORDS) -> list[dict]:
    """The words two decoded distributions both give high probability.

    Each word is scored by the geometric mean of its two probabilities: high
    only when both are, so a word that one code alone favours ranks low.

    Returns:
        ``{"word", "score", "first", "second"}`` dicts (the two probabilities), best first.
    """
    Range("-k", 1).check(k)
    first, second = np.asarray(first, np.float64).ravel(), np.asarray(second, np.float64).ravel()
    if not first.shape == second.shape == (len(vocabulary),):
        raise InputError(f"two word distributions over the {len(vocabulary)}-term vocabulary are needed; "
                         f"got {first.shape} and {second.shape}")
    score = np.sqrt(np.maximum(first, 0) * np.maximum(second, 0))
    k = min(k, len(vocabulary))
    best = np.argpartition(-score, k - 1)[:k]
    best = best[np.argsort(-score[best], kind="stable")]
    return [{"word": vocabulary[i], "score": float(score[i]), "first": float(first[i]), "second": float(second[i])}
            for i in best]


def to_pixels(decoded: np.ndarray) -> np.ndarray:
    """Decoder pixels in [0, 1] as ``uint8`` images (the stored inputs' kind)."""
    return np.clip(np.rint(np.asarray(decoded) * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# On an opened index
# --------------------------------------------------------------------------


@dataclass
class Generated:
    """What a generation produced.

    Attributes:
        kind: ``grid``, ``between``, ``sample`` or ``words``.
        codes: The decoded codes ``(n, d)`` (the decoder's input space).
        images: Decoded ``uint8`` images (image indexes), else ``None``.
        words: Top ``(word, probability)`` pairs per code (document indexes), else ``None``.
        out: The PNG written, if any.
        notes: Lines for the user (a binary index's codes, ...).
        info: Kind-specific figures (grid axes, item ids, explained variance, ...).
    """

    kind: str
    codes: np.ndarray
    images: np.ndarray | None = None
    words: list | None = None
    out: Path | None = None
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (the images themselves are in ``out``)."""
        found = {"kind": self.kind, "codes": len(self.codes), "out": str(self.out) if self.out else None,
                 "notes": self.notes, **self.info}
        if self.words is not None:
            found["words"] = [[{"word": w, "probability": p} for w, p in row] for row in self.words]
        return found


def autoencoder(retriever):
    """The index's autoencoder, checked to have a decoder.

    Raises:
        IndexFormatError: The index was saved without its decoder.
    """
    encoder, _ = retriever.method("ae")
    if not getattr(encoder, "has_decoder", False):
        raise IndexFormatError(f"index {retriever.name!r} has no decoder (built before novelty scores); rebuild "
                               f"it to generate ('retrieval index {retriever.modality.name} SOURCE --name "
                               f"{retriever.name} --force')")
    return encoder


def _notes(encoder) -> list[str]:
    return [BINARY_NOTE] if encoder.binary else []


def _require(retriever, modality, what: str, instead: str) -> None:
    if retriever.modality is not modality:
        raise InputError(f"{what} needs an index of {modality.noun}; {retriever.name!r} holds "
                         f"{retriever.modality.noun} ({instead})")


def _images_only(retriever, what: str) -> None:
    _require(retriever, IMAGES, what, "use --like ID, --between ID1 ID2 or a query text for top words")


def _docs_only(retriever, what: str) -> None:
    _require(retriever, DOCS, what, "use --grid, --between ID1 ID2 or --sample N for pictures")


def item_codes(retriever, ids: list[str], encoder=None) -> np.ndarray:
    """The decoder codes of indexed items, by id (their stored inputs re-encoded).

    Raises:
        ItemNotFound: An id is not indexed.
    """
    encoder = encoder or autoencoder(retriever)
    positions = [retriever.metadata.position(i) for i in ids]
    inputs = retriever.inputs("generating from items")
    return encoder.decoder_codes(_rows(inputs, positions))


def _rows(inputs, positions):
    return inputs[np.asarray(positions, dtype=np.int64)]


def sample_positions(retriever, max_items: int, seed: int) -> np.ndarray:
    """A seeded sample of at most ``max_items`` item positions, in order."""
    Range("--max-items", 2).check(max_items)
    n = len(retriever.metadata)
    if n < 2:
        raise InputError(f"index {retriever.name!r} holds {n} item(s); generating needs at least 2")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(max_items, n), replace=False))


def _decode_images(retriever, encoder, codes: np.ndarray) -> np.ndarray:
    shape = retriever.inputs("generating").shape[1:]
    return to_pixels(encoder.decode(codes).reshape((len(codes), *shape)))


def _decode_words(retriever, encoder, codes: np.ndarray, k: int) -> list:
    return top_words(encoder.decode(codes), retriever.state.vocabulary_, k)


def grid(retriever, out: str | Path, *, steps: int = GENERATE_GRID_STEPS, map: str = GENERATE_MAPS[0],
         max_items: int = MAP_MAX_ITEMS, epochs: int = MAP_EPOCHS, seed: int = GENERATE_SEED) -> Generated:
    """Decode an evenly spaced grid over the 2-d map of the codes and draw it beside the items' positions.

    Args:
        retriever: An opened image index.
        out: The PNG to write (see :func:`retrieval.plots.plot_generated_grid`).
        steps: Tiles per side.
        map: ``pca``: the first two principal directions of the index's
            codes, the rest of each code held at the mean (NumPy only);
            ``autoencoder``: a 2-d autoencoder trained on the sampled items as
            ``plot`` trains it, whose own decoder renders the grid (TensorFlow).
        max_items: Items sampled for the map (and drawn on it).
        epochs: Epochs of the 2-d autoencoder (``map="autoencoder"``).
        seed: Seed of the sample and of the 2-d autoencoder.
    """
    from .plots import _check_png, plot_generated_grid

    _images_only(retriever, "--grid")
    if map not in GENERATE_MAPS:
        raise InputError(f"--map must be one of {', '.join(GENERATE_MAPS)}; got {map!r}")
    Range("--steps", 2, 50).check(steps)
    out = _check_png(out)
    positions = sample_positions(retriever, max_items, seed)
    inputs = _rows(retriever.inputs("--grid"), positions)
    labels = retriever.metadata.labels()[positions]
    notes: list[str] = []
    if map == "pca":
        encoder = autoencoder(retriever)
        notes = _notes(encoder)
        full = encoder.decoder_codes(inputs)
        mean, axes, coords = principal_plane(full)
        points, xs, ys = grid_points(coords, steps)
        codes = plane_to_codes(mean, axes, points)
        decoded = _decode_images(retriever, encoder, codes)
        total = float(np.var(full, axis=0).sum())
        info = {"map": map, "steps": steps, "items": int(len(positions)), "x": xs.tolist(), "y": ys.tolist(),
                "explained_variance": float(np.var(coords, axis=0).sum() / total) if total > 0 else 0.0}
        axis_names = ("principal direction 1", "principal direction 2")
    else:
        modality = retriever.modality
        config = modality.config_class.from_dict(retriever.manifest.get("config", {}))
        ae2 = modality.autoencoder(config, code_dim=2, epochs=epochs, binarize="none", pretrain="none", seed=seed)
        ae2.fit(inputs)
        coords = ae2.decoder_codes(inputs).astype(np.float64)
        points, xs, ys = grid_points(coords, steps)
        codes = points.astype(np.float32)
        decoded = to_pixels(ae2.decode(codes).reshape((len(codes), *inputs.shape[1:])))
        info = {"map": map, "steps": steps, "items": int(len(positions)), "x": xs.tolist(), "y": ys.tolist()}
        axis_names = ("2-d code, unit 1", "2-d code, unit 2")
    plot_generated_grid(decoded, steps, coords, labels, xs, ys, out,
                        title=f"{retriever.name}: decoder over a {steps}x{steps} grid of the "
                              f"{'principal plane of the codes' if map == 'pca' else '2-d autoencoder map'}",
                        axis_names=axis_names)
    return Generated("grid", codes, images=decoded, out=out, notes=notes, info=info)


def between(retriever, first: str, second: str, *, steps: int = GENERATE_PATH_STEPS, out: str | Path | None = None,
            k: int = TOP_WORDS) -> Generated:
    """Decode the straight path between two items' codes, both ends included.

    The ends decode to the two items' own reconstructions. Image indexes
    write a strip (``out``: the original, the path, the other original);
    document indexes give the top words of each step.
    """
    Range("--steps", 2, 100).check(steps)
    encoder = autoencoder(retriever)
    codes = interpolate(*item_codes(retriever, [first, second], encoder), steps)
    info = {"between": [first, second], "steps": steps, "t": np.linspace(0, 1, steps).round(4).tolist()}
    if retriever.modality is DOCS:
        return Generated("between", codes, words=_decode_words(retriever, encoder, codes, k),
                         notes=_notes(encoder), info=info)
    from .plots import _check_png, make_tile_sheet

    if out is None:
        raise InputError("--between on an image index draws a strip; pass --out FILE.png")
    out = _check_png(out)
    decoded = _decode_images(retriever, encoder, codes)
    stored = retriever.inputs("--between")
    ends = _rows(stored, [retriever.metadata.position(first), retriever.metadata.position(second)])
    labels = {r["id"]: r["label"] for r in retriever.metadata.rows([retriever.metadata.position(i)
                                                                   for i in (first, second)])}
    captions = ([f"{first}\n{labels.get(first) or ''}"] + [f"t={t:.2f}" for t in np.linspace(0, 1, steps)]
                + [f"{second}\n{labels.get(second) or ''}"])
    make_tile_sheet([ends[0], *decoded, ends[1]], captions, out, columns=steps + 2)
    return Generated("between", codes, images=decoded, out=out, notes=_notes(encoder), info=info)


def sample(retriever, n: int, out: str | Path, *, max_items: int = MAP_MAX_ITEMS, seed: int = GENERATE_SEED) -> Generated:
    """Decode ``n`` codes drawn from a Gaussian fitted to the codes of (a sample of) the items."""
    from .plots import _check_png, make_tile_sheet

    _images_only(retriever, "--sample")
    Range("--sample", 1, 1000).check(n)
    out = _check_png(out)
    encoder = autoencoder(retriever)
    positions = sample_positions(retriever, max_items, seed)
    codes = gaussian_sample(encoder.decoder_codes(_rows(retriever.inputs("--sample"), positions)), n, seed)
    decoded = _decode_images(retriever, encoder, codes)
    make_tile_sheet(list(decoded), [""] * n, out, columns=min(n, 10))
    return Generated("sample", codes, images=decoded, out=out, notes=_notes(encoder),
                     info={"sample": n, "fitted_on": int(len(positions))})


def query_codes(retriever, *, query: str | None = None, like: str | None = None, encoder=None) -> np.ndarray:
    """The decoder code ``(1, d)`` of a query text or of an indexed item (exactly one)."""
    if (query is None) == (like is None):
        raise InputError("give exactly one of a query text or --like ID")
    encoder = encoder or autoencoder(retriever)
    if like is not None:
        return item_codes(retriever, [like], encoder)
    return encoder.decoder_codes(retriever.query_inputs([query]))


def words(retriever, *, query: str | None = None, like: str | None = None, k: int = TOP_WORDS) -> Generated:
    """The decoder's top words for the code of a query text or of an indexed item."""
    _docs_only(retriever, "top words")
    encoder = autoencoder(retriever)
    codes = query_codes(retriever, query=query, like=like, encoder=encoder)
    return Generated("words", codes, words=_decode_words(retriever, encoder, codes, k), notes=_notes(encoder),
                     info={"like": like} if like is not None else {"query": query})


def explain(retriever, hit_ids: list[str], *, query: str | None = None, like: str | None = None,
            k: int = TOP_WORDS, query_code: np.ndarray | None = None) -> list[dict]:
    """Why a query matched each hit: the words the decoder favours for both codes.

    Args:
        retriever: An opened document index.
        hit_ids: The hits' item ids.
        query: The query text, or ``like``: the query item's id (or ``query_code``, already computed).
        k: Words per hit.

    Returns:
        One ``{"id", "words": [{"word", "score", "query", "hit"}]}`` per hit
        (``query``/``hit``: the word's probability under each code).
    """
    _docs_only(retriever, "explain")
    encoder = autoencoder(retriever)
    if query_code is None:
        query_code = query_codes(retriever, query=query, like=like, encoder=encoder)
    if not hit_ids:
        return []
    vocabulary = retriever.state.vocabulary_
    query_words = encoder.decode(query_code)[0]
    hit_words = encoder.decode(item_codes(retriever, list(hit_ids), encoder))
    found = []
    for item, dist in zip(hit_ids, hit_words):
        pairs = shared_words(query_words, dist, vocabulary, k)
        found.append({"id": item, "words": [{"word": p["word"], "score": p["score"], "query": p["first"],
                                             "hit": p["second"]} for p in pairs]})
    return found
