"""Vector quantisation of codes in groups: the NumPy side of the VQ-VAE method (issue 14).

A code of ``D`` floats is split into ``G`` groups of ``D / G``; each group is
replaced by the nearest of ``K`` codebook vectors of its own, so an item is
stored as ``G`` codebook indices (one byte each for ``K <= 256``). Queries
are not quantised: the FAISS product-quantisation index
(:class:`retrieval.ann.PQIndex`) compares the float query with the stored
codes through per-group distance tables (asymmetric distance computation).

Everything here is NumPy: a loaded index quantises and searches without
TensorFlow. Training the codebook (straight-through gradients, commitment
loss, restarts of dead entries) is in :mod:`.autoencoder.models` and
:mod:`.autoencoder.training`.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..config import QUANTIZE_MODES, VQ_SPACES
from ..errors import InputError

#: Largest codebook: an index must fit one byte.
MAX_CODEBOOK = 256


def _positive_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_quantizer(groups, codebook, code_dim) -> tuple[int, int]:
    """Validate a VQ layout.

    Args:
        groups: Number of groups ``G`` (bytes per item).
        codebook: Codebook entries per group ``K``, 2 to 256.
        code_dim: The code dimension, a multiple of ``groups``.

    Returns:
        ``(groups, codebook)`` as ints.

    Raises:
        InputError: Naming the bad value and what fits.
    """
    if not _positive_int(groups) or groups > 1024:
        raise InputError(f"--groups must be an integer from 1 to 1024 (bytes per item); got {groups!r}")
    if not _positive_int(codebook) or not 2 <= codebook <= MAX_CODEBOOK:
        raise InputError(f"--codebook must be an integer from 2 to {MAX_CODEBOOK} (one byte per group); got {codebook!r}")
    if not _positive_int(code_dim) or code_dim % groups:
        raise InputError(f"the code dimension ({code_dim!r}) must be a multiple of --groups ({groups}); "
                         f"use --code-dim {groups * max(1, round((code_dim or groups) / groups))}")
    return int(groups), int(codebook)


def check_decay(decay) -> float:
    """Validate the codebook's moving-average decay: 0 (learned by its own loss) or in (0, 1)."""
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 <= decay < 1:
        raise InputError(f"codebook_decay must be 0 (the codebook learns by its own loss) or a moving-average "
                         f"decay in (0, 1) such as 0.99; got {decay!r}")
    return float(decay)


def split_groups(codes, groups: int, unit: bool) -> np.ndarray:
    """``(n, D)`` codes as ``(n, G, D / G)`` float32 groups, each scaled to unit length when ``unit``."""
    codes = np.asarray(codes, dtype=np.float32)
    parts = codes.reshape(len(codes), groups, -1)
    if unit:
        norms = np.linalg.norm(parts, axis=2, keepdims=True)
        parts = parts / np.maximum(norms, np.float32(1e-12))
    return np.ascontiguousarray(parts, dtype=np.float32)


def whitened_space(codes: np.ndarray, *, groups: int, whiten: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The map into the space ``vq_space="whitened"`` quantises, learned from float codes.

    A raw code ``z`` maps to ``u = sqrt(G) (z - mean) P / ||(z - mean) P||``:
    centred and partially whitened as the float codes are compared (``P``
    from :func:`~.autoencoder.training._partial_whitening` with ``whiten``),
    the whole code at unit length (so L2 between ``u`` orders as the float
    codes' cosine does), times ``sqrt(G)`` so that a group has unit length on
    average (the scale of ``groups`` space: the commitment weight means the
    same in both). The way back, for the decoder, cannot know the norm a
    quantised code lost: it restores the median norm of the training codes,
    ``z' = u inverse + mean`` with ``inverse = median ||(z - mean) P|| / sqrt(G) * P^-1``.

    Args:
        codes: ``(n, D)`` raw float codes of training rows (the float phase's).
        groups: Groups of the VQ code.
        whiten: Partial whitening exponent (0: centring only).

    Returns:
        ``(mean (D,), projection (D, D), inverse (D, D))``, float32.
    """
    from .autoencoder.training import _partial_whitening

    codes = np.asarray(codes, dtype=np.float64)
    mean = codes.mean(axis=0)
    projection = _partial_whitening(codes - mean, whiten).astype(np.float64)
    norms = np.linalg.norm((codes - mean) @ projection, axis=1)
    scale = float(np.median(norms)) if len(norms) else 1.0
    inverse = np.linalg.pinv(projection) * (max(scale, 1e-12) / np.sqrt(groups))
    return mean.astype(np.float32), projection.astype(np.float32), inverse.astype(np.float32)


def to_whitened(codes, mean: np.ndarray, projection: np.ndarray, groups: int) -> np.ndarray:
    """``(n, D)`` raw codes in the whitened VQ space (see :func:`whitened_space`), float32."""
    y = (np.asarray(codes, dtype=np.float32) - mean) @ projection
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y * (np.float32(np.sqrt(groups)) / np.maximum(norms, np.float32(1e-12)))).astype(np.float32)


def assign(parts: np.ndarray, codebook: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Nearest codebook entry of every group: ``(n, G)`` uint8 indices.

    Args:
        parts: ``(n, G, d)`` groups (see :func:`split_groups`).
        codebook: ``(G, K, d)`` float32.
        batch: Rows per block (bounds the ``(rows, G, K)`` distance block).
    """
    codebook = np.asarray(codebook, dtype=np.float32)
    sq = np.square(codebook).sum(axis=2)  # (G, K)
    out = np.empty(parts.shape[:2], dtype=np.uint8)
    for start in range(0, len(parts), batch):
        p = parts[start:start + batch]
        # ||p - e||^2 = ||p||^2 - 2 p.e + ||e||^2; the first term is the same for every e.
        dots = np.einsum("ngd,gkd->ngk", p, codebook)
        out[start:start + batch] = np.argmin(sq[None] - 2 * dots, axis=2)
    return out


def decode(indices, codebook) -> np.ndarray:
    """The codebook vectors of ``(n, G)`` indices, joined: ``(n, G * d)`` float32."""
    indices = np.asarray(indices, dtype=np.int64)
    codebook = np.asarray(codebook, dtype=np.float32)
    groups = np.arange(codebook.shape[0])
    return codebook[groups[None, :], indices].reshape(len(indices), -1)


def kmeans_codebook(parts: np.ndarray, size: int, *, seed: int = 0, iterations: int = 20,
                    unit: bool = False, sample: int = 50_000) -> np.ndarray:
    """A ``(G, K, d)`` codebook from k-means of each group (FAISS), the start of VQ training.

    Fewer distinct rows than ``size`` leave the surplus entries as copies of
    drawn rows (FAISS needs at least ``size`` points). ``unit`` scales the
    centroids back to unit length (spherical k-means' centroids).
    """
    import faiss

    rng = np.random.default_rng(seed)
    if len(parts) > sample:
        parts = parts[np.sort(rng.choice(len(parts), sample, replace=False))]
    n, groups, d = parts.shape
    out = np.empty((groups, size, d), dtype=np.float32)
    for g in range(groups):
        x = np.ascontiguousarray(parts[:, g, :])
        if n < size:
            x = x[rng.choice(n, size, replace=True)] + rng.normal(0, 1e-3, (size, d)).astype(np.float32)
        km = faiss.Kmeans(d, size, niter=iterations, seed=seed + g, spherical=unit, verbose=False,
                          min_points_per_centroid=1)  # few rows are fine: no FAISS warning on stderr
        km.train(np.ascontiguousarray(x, dtype=np.float32))
        out[g] = km.centroids
    if unit:
        out /= np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-12)
    return out


def restart_dead(codebook: np.ndarray, parts: np.ndarray, rng: np.random.Generator,
                 noise: float = 1e-2) -> tuple[np.ndarray, int]:
    """Move every entry no row of ``parts`` uses onto a randomly drawn row (plus a little noise).

    A dead entry gets no gradient and never comes back by itself: moved onto
    a real encoding it starts taking rows from its crowded neighbours.

    Args:
        codebook: ``(G, K, d)``; not modified.
        parts: ``(n, G, d)`` recent encodings of training rows.
        rng: Draws the rows.
        noise: Standard deviation of the noise, relative to the rows' RMS.

    Returns:
        ``(new codebook, number of entries restarted)``.
    """
    codebook = np.array(codebook, dtype=np.float32, copy=True)
    used = assign(parts, codebook)
    restarted = 0
    scale = noise * float(np.sqrt(np.mean(np.square(parts)))) if parts.size else noise
    for g in range(codebook.shape[0]):
        counts = np.bincount(used[:, g], minlength=codebook.shape[1])
        dead = np.flatnonzero(counts == 0)
        if not len(dead) or not len(parts):
            continue
        rows = rng.choice(len(parts), len(dead), replace=len(dead) > len(parts))
        codebook[g, dead] = parts[rows, g] + rng.normal(0, scale, (len(dead), codebook.shape[2]))
        restarted += len(dead)
    return codebook, restarted


def usage(indices: np.ndarray, size: int) -> np.ndarray:
    """Share of the ``size`` entries of each group that ``(n, G)`` indices use: ``(G,)``."""
    return np.array([len(np.unique(indices[:, g])) / size for g in range(indices.shape[1])])


__all__ = ["MAX_CODEBOOK", "QUANTIZE_MODES", "VQ_SPACES", "assign", "check_decay", "check_quantizer", "decode", "kmeans_codebook",
           "restart_dead", "split_groups", "to_whitened", "usage", "whitened_space"]
