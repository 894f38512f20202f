"""Semantic-hashing baselines: binary codes compared by Hamming distance.

Two classic hashes against which the autoencoders' binary codes are measured
(issue #4):

* :class:`LSHEncoder`: random-hyperplane LSH (Charikar's SimHash), which
  learns nothing but the mean; the Hamming distance estimates the angle.
* :class:`ITQEncoder`: Iterative Quantization (Gong & Lazebnik, CVPR 2011),
  PCA followed by the rotation that loses least when the projections are
  rounded to their signs.

Both accept a TF-IDF matrix (documents) or ``(n, h, w, c)`` uint8 images and
return codes packed eight bits to a byte, the layout FAISS' binary indexes
expect.
"""
from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .base import Encoder
from .baselines import _check_components, flatten_pixels

#: Number of set bits in every byte value.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.int32)
#: Bytes of the (rows, columns, bytes) XOR block in :func:`hamming_distances`.
_BLOCK_BYTES = 1 << 24


def check_bits(n_bits) -> int:
    """Validate a code length in bits.

    Args:
        n_bits: Requested number of bits.

    Returns:
        ``n_bits`` as an int.

    Raises:
        InputError: Unless ``n_bits`` is an integer multiple of 8 between 8 and
            1024 (codes are packed into whole bytes).
    """
    if (isinstance(n_bits, numbers.Integral) and not isinstance(n_bits, bool)
            and 8 <= n_bits <= 1024 and n_bits % 8 == 0):
        return int(n_bits)
    raise InputError(f"--bits must be a multiple of 8 between 8 and 1024 (16, 32, 64, 128 ...); got {n_bits!r}")


def pack_bits(bits) -> np.ndarray:
    """Pack a ``(n, B)`` array of bits into ``(n, ceil(B / 8))`` uint8 codes.

    Args:
        bits: Boolean or 0/1 array; every non-zero entry is a 1 bit.

    Returns:
        C-contiguous uint8 codes, first bit in the most significant position.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be a 2-D (items, bits) array; got shape {bits.shape}")
    return np.ascontiguousarray(np.packbits(bits != 0, axis=1))


def unpack_bits(codes, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`.

    Args:
        codes: ``(n, bytes)`` uint8 codes.
        n_bits: Number of bits per code (drops the padding of a last byte).

    Returns:
        ``(n, n_bits)`` boolean array.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    return np.unpackbits(codes, axis=1, count=n_bits).astype(bool)


def hamming_distances(a, b) -> np.ndarray:
    """Hamming distances between every code of ``a`` and every code of ``b``.

    Meant for tests and re-ranking small sets; large collections go through
    the FAISS binary index.

    Args:
        a: ``(n, bytes)`` uint8 packed codes.
        b: ``(m, bytes)`` uint8 packed codes of the same width.

    Returns:
        ``(n, m)`` int32 matrix of differing bits.
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"codes must be 2-D with the same number of bytes; got {a.shape} and {b.shape}")
    out = np.empty((len(a), len(b)), dtype=np.int32)
    # The XOR block is rows x len(b) x bytes; blocks of rows bound its memory.
    step = max(1, _BLOCK_BYTES // max(1, b.size))
    for start in range(0, len(a), step):
        xor = a[start:start + step, None, :] ^ b[None, :, :]
        out[start:start + step] = _POPCOUNT[xor].sum(axis=2)
    return out


def as_features(X):
    """Turn encoder input into a float32 feature matrix.

    Args:
        X: A TF-IDF matrix (scipy sparse or 2-D array: documents) or
            ``(n, h, w, c)`` uint8 images.

    Returns:
        Float32 CSR for sparse input (never densified), else a dense float32
        ``(n, features)`` array (images flattened and scaled to [0, 1]).

    Raises:
        InputError: For any other shape.
    """
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float32)
    X = np.asarray(X)
    if X.ndim == 4 and X.dtype == np.uint8:
        return flatten_pixels(X)
    if X.ndim == 2 and X.dtype.kind in "fiu":
        return np.asarray(X, dtype=np.float32)
    raise InputError(f"expected a (documents, features) matrix or (n, h, w, c) uint8 images; "
                     f"got shape {X.shape} of {X.dtype}")


def _centred_product(M, mean: np.ndarray, W: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """``(M - mean) @ W`` as float32, without densifying a sparse ``M``.

    ``offset`` is ``mean @ W`` when the caller has it cached: for one query
    that product (the whole of ``W``) costs far more than ``M @ W``.
    """
    if M.shape[1] != W.shape[0]:
        raise InputError(f"input has {M.shape[1]} features but the encoder was fitted on {W.shape[0]}; "
                         "use the vectorizer or image size of the index")
    if offset is None:
        offset = (mean @ W).astype(np.float32)
    # Subtracting the projected mean keeps a sparse M sparse.
    return np.asarray(M @ W, dtype=np.float32) - offset


def _random_rotation(n: int, seed: int) -> np.ndarray:
    """A seeded random orthogonal ``(n, n)`` float32 matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    # Fixing the signs makes the draw uniform (Haar) rather than QR-biased.
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _quantization_loss(V: np.ndarray, R: np.ndarray) -> tuple[float, np.ndarray]:
    """Return ``||B - VR||_F^2 / n`` and ``B = sign(VR)`` in {-1, +1}."""
    Z = V @ R
    B = np.where(Z > 0, np.float32(1), np.float32(-1))
    return float(np.square(B - Z, dtype=np.float64).sum() / len(V)), B


class BinaryEncoder(Encoder):
    """Base class of the hashes: binary codes packed into bytes.

    ``transform`` returns ``(n, n_bits // 8)`` uint8 codes whose bits are the
    signs of :meth:`transform_float`; subclasses implement ``_fit`` and
    ``_project`` on the float32 features of :func:`as_features`.
    Works on documents and images alike.

    Args:
        n_bits: Code length, a multiple of 8 (see :func:`check_bits`).
    """

    binary = True
    metric = "hamming"

    n_bits: int

    @property
    def dim(self) -> int:
        """Number of bits of a code."""
        return self.n_bits

    def fit(self, X, **kwargs) -> "BinaryEncoder":
        """Learn the hash from ``X``; returns self.

        Args:
            X: TF-IDF matrix (documents) or ``(n, h, w, c)`` uint8 images.

        Returns:
            self.

        Raises:
            InputError: For a bad ``n_bits`` (see :func:`check_bits`), other
                bad parameters, or unusable input.
        """
        self._offset = None  # the cached projected mean of an earlier fit
        self._fit(check_bits(self.n_bits), as_features(X))
        return self

    def transform_float(self, X) -> np.ndarray:
        """Real-valued projections whose signs are the bits.

        Args:
            X: TF-IDF matrix or uint8 images, as for ``fit``.

        Returns:
            ``(n, n_bits)`` float32; bit ``j`` is set where column ``j`` is > 0.
        """
        self.check_fitted()
        return self._project(as_features(X))

    def transform(self, X) -> np.ndarray:
        """Encode ``X`` into packed binary codes.

        Args:
            X: TF-IDF matrix or uint8 images, as for ``fit``.

        Returns:
            C-contiguous ``(n, n_bits // 8)`` uint8 codes.
        """
        return pack_bits(self.transform_float(X) > 0)

    def _fit(self, n_bits: int, M) -> None:  # pragma: no cover - abstract
        """Learn the state from the float32 feature matrix ``M``."""
        raise NotImplementedError

    def _project(self, M) -> np.ndarray:  # pragma: no cover - abstract
        """Float32 ``(n, n_bits)`` projections of the feature matrix ``M``."""
        raise NotImplementedError


class LSHEncoder(BinaryEncoder):
    """Random-hyperplane LSH (Charikar's SimHash).

    Bit ``j`` is the side of a random Gaussian hyperplane through the mean, so
    the fraction of differing bits estimates the angle between two centred
    inputs divided by pi.

    Args:
        n_bits: Code length, a multiple of 8.
        center: Put the hyperplanes through the data mean (else the origin).
        seed: Seed of the hyperplanes.

    Attributes:
        mean_: ``(features,)`` float32 data mean (zeros when ``center`` is False).
        planes_: ``(features, n_bits)`` float32 hyperplane normals.
    """

    name = "lsh"
    _arrays = ("mean", "planes")

    def __init__(self, n_bits: int = 64, center: bool = True, seed: int = 0) -> None:
        self.n_bits = n_bits
        self.center = center
        self.seed = seed

    def _fit(self, n_bits: int, M) -> None:
        n_features = M.shape[1]
        if self.center:
            self.mean_ = np.asarray(M.mean(axis=0), dtype=np.float32).ravel()
        else:
            self.mean_ = np.zeros(n_features, dtype=np.float32)
        rng = np.random.default_rng(self.seed)
        self.planes_ = rng.standard_normal((n_features, n_bits), dtype=np.float32)

    def _project(self, M) -> np.ndarray:
        if getattr(self, "_offset", None) is None:
            self._offset = (self.mean_ @ self.planes_).astype(np.float32)
        return _centred_product(M, self.mean_, self.planes_, self._offset)


class ITQEncoder(BinaryEncoder):
    """Iterative Quantization (Gong & Lazebnik, CVPR 2011).

    Projects centred data onto the top ``n_bits`` principal directions, then
    learns the orthogonal rotation that minimises the quantization loss
    ``||sign(VR) - VR||_F^2``, alternating the bits and an orthogonal
    Procrustes fit of the rotation. Sparse input (TF-IDF) uses a truncated SVD
    and centres the projections, because centring the matrix itself would
    densify it; dense input (images, dense feature arrays) uses PCA.

    Args:
        n_bits: Code length, a multiple of 8, smaller than the number of items
            and of features (``fit`` raises InputError otherwise).
        iterations: Rotation updates.
        seed: Seed of the SVD/PCA solver and of the initial rotation.

    Attributes:
        components_: ``(n_bits, features)`` float32 principal directions.
        input_mean_: ``(features,)`` float32 mean of dense input such as images
            (zeros for sparse TF-IDF input).
        mean_: ``(n_bits,)`` float32 mean of the projections.
        rotation_: ``(n_bits, n_bits)`` float32 orthogonal rotation.
        quantization_loss_: ``(iterations + 1,)`` loss per item, first with
            the initial random rotation, then after each update.
    """

    name = "itq"
    _arrays = ("components", "input_mean", "mean", "rotation", "quantization_loss")

    def __init__(self, n_bits: int = 64, iterations: int = 50, seed: int = 0) -> None:
        self.n_bits = n_bits
        self.iterations = iterations
        self.seed = seed

    def _fit(self, n_bits: int, M) -> None:
        if not isinstance(self.iterations, numbers.Integral) or self.iterations < 0:
            raise InputError(f"ITQ iterations must be an integer >= 0; got {self.iterations!r}")
        _check_components(n_bits, M.shape[0], M.shape[1])
        if sp.issparse(M):
            from sklearn.decomposition import TruncatedSVD  # fitting only (see baselines._SKLEARN_LAZY)

            svd = TruncatedSVD(n_bits, algorithm="randomized", n_iter=7, random_state=self.seed).fit(M)
            components, input_mean = svd.components_, np.zeros(M.shape[1])
        else:
            from sklearn.decomposition import PCA  # fitting only (see baselines._SKLEARN_LAZY)

            pca = PCA(n_bits, svd_solver="randomized", random_state=self.seed).fit(M)
            components, input_mean = pca.components_, pca.mean_
        self.components_ = np.ascontiguousarray(components, dtype=np.float32)
        self.input_mean_ = input_mean.astype(np.float32)
        V = _centred_product(M, self.input_mean_, self.components_.T)
        self.mean_ = V.mean(axis=0)
        V -= self.mean_

        R = _random_rotation(n_bits, self.seed)
        losses = []
        for _ in range(self.iterations):
            loss, B = _quantization_loss(V, R)
            losses.append(loss)
            # Orthogonal Procrustes: the R minimising ||B - VR||_F is U W^T
            # for the SVD V^T B = U S W^T (Gong & Lazebnik, eq. 3).
            U, _s, Wt = np.linalg.svd(V.T.astype(np.float64) @ B)
            R = (U @ Wt).astype(np.float32)
        losses.append(_quantization_loss(V, R)[0])
        self.rotation_ = R
        self.quantization_loss_ = np.asarray(losses)

    def _project(self, M) -> np.ndarray:
        if getattr(self, "_offset", None) is None:
            self._projection = np.ascontiguousarray(self.components_.T)
            self._offset = (self.input_mean_ @ self._projection).astype(np.float32) + self.mean_
        return _centred_product(M, self.input_mean_, self._projection, self._offset) @ self.rotation_


__all__ = ["BinaryEncoder", "ITQEncoder", "LSHEncoder", "as_features", "check_bits", "hamming_distances",
           "pack_bits", "unpack_bits"]
