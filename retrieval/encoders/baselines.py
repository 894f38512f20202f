"""The classic baselines behind the encoder contract.

Documents: LSA (truncated SVD of the TF-IDF matrix) and raw TF-IDF cosine.
Images: raw pixels (Euclidean distance) and PCA.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .base import Encoder

# _SKLEARN_LAZY: scikit-learn is imported where a model is fitted, never at
# module level: transform() is a matrix product, and importing scikit-learn
# (it pulls in scipy.stats, and pandas when installed, as the Ray extra does)
# took 8 s of the 15 s of an `add` of 1,000 documents on a loaded machine.


def _check_components(n_components: int, n_samples: int, n_features: int) -> None:
    if n_components < 1:
        raise InputError(f"code dimension must be >= 1; got {n_components}")
    limit = min(n_samples, n_features)
    if n_components >= limit:
        raise InputError(f"code dimension must be < min(items, features) = {limit}; got {n_components}. "
                         "Use a smaller --code-dim or a larger corpus")


class LSAEncoder(Encoder):
    """Latent semantic analysis: truncated SVD of the TF-IDF matrix.

    Args:
        n_components: Code dimension.
        seed: Seed of the randomized SVD.

    Attributes:
        components_: ``(n_components, vocabulary)`` float32 projection.
    """

    name = "lsa"
    metric = "cosine"
    _arrays = ("components",)

    def __init__(self, n_components: int = 32, seed: int = 0) -> None:
        self.n_components = n_components
        self.seed = seed

    def fit(self, X, **kwargs) -> "LSAEncoder":
        """Fit the SVD on the TF-IDF matrix ``X``; returns self."""
        _check_components(self.n_components, X.shape[0], X.shape[1])
        from sklearn.decomposition import TruncatedSVD  # fitting only: see _SKLEARN_LAZY

        svd = TruncatedSVD(self.n_components, algorithm="randomized", n_iter=7, random_state=self.seed)
        svd.fit(X)
        self.components_ = svd.components_.astype(np.float32)
        return self

    def transform(self, X) -> np.ndarray:
        """Project TF-IDF rows onto the singular vectors."""
        return np.asarray(X @ self.components_.T, dtype=np.float32)

    @property
    def dim(self) -> int:
        return self.n_components


class _IdentityEncoder(Encoder):
    """An encoder that learns nothing but the input width (``n_features_``)."""

    def __init__(self) -> None:
        pass

    def fit(self, X, **kwargs) -> "_IdentityEncoder":
        """Record the input width; returns self."""
        self.n_features_ = int(np.prod(X.shape[1:]))
        return self

    @property
    def dim(self) -> int:
        return self.n_features_

    def _save_extra(self, folder) -> None:
        (folder / "n_features.txt").write_text(str(self.n_features_))

    def _load_extra(self, folder) -> None:
        self.n_features_ = int((folder / "n_features.txt").read_text())


class TfidfEncoder(_IdentityEncoder):
    """Raw TF-IDF cosine: the identity on the (sparse) TF-IDF matrix.

    ``transform`` returns a float32 CSR matrix; the sparse index backend
    searches it exactly.

    Attributes:
        n_features_: Vocabulary size seen by ``fit``.
    """

    name = "tfidf"
    metric = "cosine"
    sparse = True

    def transform(self, X) -> sp.csr_matrix:
        """Return ``X`` as float32 CSR."""
        return sp.csr_matrix(X, dtype=np.float32)


def flatten_pixels(X: np.ndarray) -> np.ndarray:
    """``(n, h, w, c)`` uint8 -> ``(n, h*w*c)`` float32 in [0, 1]."""
    X = np.asarray(X)
    return X.reshape(len(X), -1).astype(np.float32) * np.float32(1 / 255)


class PixelEncoder(_IdentityEncoder):
    """Raw pixels in [0, 1]: the Euclidean pixel-distance baseline.

    Attributes:
        n_features_: Number of pixel values per image.
    """

    name = "pixels"
    metric = "l2"

    def transform(self, X) -> np.ndarray:
        """Flatten and scale the images."""
        return flatten_pixels(X)


class PCAEncoder(Encoder):
    """Principal component analysis of the pixels.

    Args:
        n_components: Code dimension.
        seed: Seed of the randomized solver.
        metric: ``"l2"`` (Euclidean in the PCA space) or ``"cosine"``.

    Attributes:
        mean_: Mean image, flattened, float32.
        components_: ``(n_components, pixels)`` float32.
    """

    name = "pca"
    _arrays = ("mean", "components")

    def __init__(self, n_components: int = 32, seed: int = 0, metric: str = "l2") -> None:
        self.n_components = n_components
        self.seed = seed
        self.metric = metric

    def fit(self, X, **kwargs) -> "PCAEncoder":
        """Fit PCA on the flattened images; returns self."""
        flat = flatten_pixels(X)
        _check_components(self.n_components, flat.shape[0], flat.shape[1])
        from sklearn.decomposition import PCA  # fitting only: see _SKLEARN_LAZY

        pca = PCA(self.n_components, svd_solver="randomized", random_state=self.seed).fit(flat)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        return self

    def transform(self, X) -> np.ndarray:
        """Project centred images onto the principal components."""
        return (flatten_pixels(X) - self.mean_) @ self.components_.T

    @property
    def dim(self) -> int:
        return self.n_components
