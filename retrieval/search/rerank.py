"""Two-stage search: a Hamming shortlist of binary codes, re-scored by an exact scorer.

Semantic hashing as a filter: the bits find candidates cheaply, then TF-IDF
cosine (optionally with pseudo-relevance feedback), the float codes, their
sum, or pixel distance orders them. Each re-ranker is a function
``scorer(query row, candidate positions) -> scores`` made by :func:`scorer`.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..config import DEFAULT_SHORTLIST  # noqa: F401  (re-exported)
from ..errors import IndexFormatError, InputError, RetrievalWarning

#: ``tfidf-prf``: the query is expanded by this many nearest codes' TF-IDF
#: centroid, with this weight (Rocchio pseudo-relevance feedback; measured
#: on 20NG at 64 bits: 20-50 documents, weight 1-2, BENCHMARKS.md).
PRF_DOCUMENTS = 50
PRF_WEIGHT = 2.0


def _nearest(index, codes: np.ndarray, size: int, allowed: np.ndarray | None) -> np.ndarray:
    if allowed is None:
        return index.search(codes, size)[1]
    return index.search_rows(codes, size, allowed)[1]


def shortlist(index, codes: np.ndarray, size: int, radius: int | None,
              allowed: np.ndarray | None = None) -> list[np.ndarray]:
    """Candidate positions per query: the ``size`` nearest codes, or every code within ``radius``.

    ``allowed``: the sorted positions a filter keeps (``None``: every item);
    the shortlist is drawn from them only.
    """
    if radius is None:
        return [row[row >= 0] for row in _nearest(index, codes, size, allowed)]
    out = []
    for code in codes:
        _, positions = index.within(code[None], radius)
        if allowed is not None:
            positions = positions[np.isin(positions, allowed)]
        if not len(positions):
            # An empty answer would look like "nothing similar exists";
            # the nearest codes are the honest fallback, said out loud.
            warnings.warn(f"no item within Hamming radius {radius} of the query; "
                          f"using the {size} nearest codes instead", RetrievalWarning, stacklevel=4)
            positions = _nearest(index, code[None], size, allowed)[0]
            positions = positions[positions >= 0]
        out.append(positions)
    return out


def rerank(candidates: list[np.ndarray], k: int, score) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` candidates of every query by ``score`` (``None``: keep the Hamming order)."""
    scores = np.full((len(candidates), k), -np.inf, np.float32)
    positions = np.full((len(candidates), k), -1, np.int64)
    for qi, cand in enumerate(candidates):
        s = -np.arange(len(cand), dtype=np.float32) if score is None else score(qi, cand)
        # Stable: equal exact scores keep their Hamming order.
        order = np.argsort(-s, kind="stable")[:k]
        scores[qi, :len(order)], positions[qi, :len(order)] = s[order], cand[order]
    return scores, positions


def scorer(name: str, inputs, *, stored=None, float_method=None):
    """``f(query row, candidate positions) -> exact scores`` of a re-ranker.

    Args:
        name: ``tfidf``, ``tfidf-prf``, ``float``, ``pixels``, a ``+``-joined
            sum of them, or ``none``.
        inputs: The queries' model inputs (TF-IDF rows or pixels).
        stored: ``need -> stored inputs`` (a callable, so only re-rankers that
            read them load them).
        float_method: ``() -> (encoder, FAISS index)`` of the float codes.
    """
    import scipy.sparse as sp

    if name == "none":
        return None
    if "+" in name:
        # Score fusion: TF-IDF cosine plus the float codes' cosine (equal
        # weights; measured on 20NG, BENCHMARKS.md): exact word overlap and
        # learned topical similarity correct each other's errors.
        parts = [scorer(part, inputs, stored=stored, float_method=float_method) for part in name.split("+")]
        return lambda qi, cand: sum(part(qi, cand) for part in parts)
    if name == "float":
        encoder, index = float_method()
        if not hasattr(index, "vectors"):
            raise IndexFormatError("the float codes are not in a FAISS index; rebuild the index")
        queries = index._prepare(encoder.transform(inputs))
        return lambda qi, cand: index.vectors(cand) @ queries[qi]
    matrix = stored(f"--rerank {name}")
    if name == "tfidf":
        queries = sp.csr_matrix(inputs, dtype=np.float32)
        return lambda qi, cand: np.asarray((matrix[cand] @ queries[qi].T).todense()).ravel()
    if name == "tfidf-prf":
        queries = sp.csr_matrix(inputs, dtype=np.float32)

        def feedback(qi, cand):
            # The nearest codes come first in the shortlist: their TF-IDF
            # centroid adds the topic's vocabulary to a short query.
            centroid = np.asarray(matrix[cand[:PRF_DOCUMENTS]].mean(axis=0)).ravel()
            expanded = queries[qi].toarray().ravel() + PRF_WEIGHT * centroid
            return np.asarray(matrix[cand] @ expanded, dtype=np.float32).ravel()

        return feedback
    if name == "pixels":
        flat = np.asarray(inputs).reshape(len(inputs), -1).astype(np.float32)

        def pixels(qi, cand):
            diff = matrix[cand].reshape(len(cand), -1).astype(np.float32) - flat[qi]
            return -np.sqrt(np.einsum("ij,ij->i", diff, diff)) / 255

        return pixels
    raise InputError(f"unknown re-ranker {name!r}")
