"""The encoder contract every method follows (scikit-learn style).

``__init__`` stores parameters only; ``fit`` returns self; learned state ends
in ``_``; ``transform`` returns float32 ``(n, d)`` (a sparse CSR matrix for
the sparse TF-IDF baseline). ``save``/``load`` use JSON and NPY (and
``.keras`` for Keras models), never pickle, so loading cannot run code.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import IndexFormatError


class Encoder:
    """Base class: parameters, persistence and the fit/transform contract.

    Class attributes:
        name: Registry key written to the manifest.
        metric: ``"cosine"`` (normalised inner product) or ``"l2"``.
        sparse: True when ``transform`` returns a sparse matrix.
        binary: True when ``transform`` returns packed ``uint8`` bit codes
            ``(n, bits / 8)`` searched by Hamming distance (``metric`` is
            then ``"hamming"`` and ``dim`` the number of bits).
    """

    name: ClassVar[str] = ""
    metric: ClassVar[str] = "cosine"
    sparse: ClassVar[bool] = False
    binary: ClassVar[bool] = False
    #: Learned arrays saved as ``<attr>.npy`` (without the trailing ``_``).
    _arrays: ClassVar[tuple[str, ...]] = ()
    #: Bytes per item of a product-quantisation index of the codes (the PQ
    #: baselines ``pq-<method>``: set on the instance by whoever builds them);
    #: ``None``: the index kind of the build.
    pq_groups: int | None = None
    #: Constructor parameters newer than some saved indexes, with the value that
    #: reproduces what those indexes did (their ``params.json`` lacks the name).
    _legacy_params: ClassVar[dict[str, Any]] = {}

    def _set_params(self, params: dict[str, Any]) -> None:
        """Store the constructor's arguments (``locals()``) as attributes of the same names.

        Sequences are stored as lists: what ``get_params`` returns survives a
        JSON round trip through ``params.json`` unchanged.
        """
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, list(value) if isinstance(value, tuple) else value)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters (JSON-serialisable)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def fit(self, X, **kwargs) -> "Encoder":  # pragma: no cover - abstract
        """Learn the encoder's state from ``X``; returns self."""
        raise NotImplementedError

    def transform(self, X) -> np.ndarray:  # pragma: no cover - abstract
        """Encode ``X`` into float32 codes of shape ``(n, dim)``."""
        raise NotImplementedError

    def fit_transform(self, X, **kwargs) -> np.ndarray:
        """``fit(X).transform(X)``."""
        return self.fit(X, **kwargs).transform(X)

    @property
    def dim(self) -> int:
        """Dimension of the codes."""
        raise NotImplementedError

    def check_fitted(self) -> None:
        """Raise when the encoder has not been fitted."""
        if not any(k.endswith("_") and not k.startswith("_") for k in vars(self)):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")

    def save(self, folder: Path) -> None:
        """Write ``params.json`` and the learned arrays into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps(self.get_params()))
        for attr in self._arrays:
            np.save(folder / f"{attr}.npy", getattr(self, attr + "_"))
        self._save_extra(folder)

    def _save_extra(self, folder: Path) -> None:
        pass

    @classmethod
    def load(cls, folder: Path) -> "Encoder":
        """Rebuild a fitted encoder from :meth:`save`'s files."""
        try:
            params = json.loads((folder / "params.json").read_text())
            # A parameter added after the index was built: the value it behaved by then.
            accepted = inspect.signature(cls.__init__).parameters
            legacy = {k: v for k, v in cls._legacy_params.items() if k in accepted}
            self = cls(**{**legacy, **params})
            for attr in self._arrays:
                setattr(self, attr + "_", np.load(folder / f"{attr}.npy", allow_pickle=False))
        except (OSError, ValueError, TypeError) as exc:
            raise IndexFormatError(f"encoder files in {folder} are missing or corrupt ({exc}); rebuild the index") from None
        self._load_extra(folder)
        return self

    def _load_extra(self, folder: Path) -> None:
        pass


def l2_normalize(codes: np.ndarray) -> np.ndarray:
    """Return rows scaled to unit length (zero rows stay zero), float32."""
    codes = np.ascontiguousarray(codes, dtype=np.float32)
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return codes / norms
