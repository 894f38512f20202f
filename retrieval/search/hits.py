"""Search results joined with the item table."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Hit:
    """One search result.

    ``score`` is higher-is-better: cosine similarity, minus the Euclidean
    distance for ``l2`` methods, minus the Hamming distance for bits.
    """

    rank: int
    score: float
    id: str
    title: str
    label: str | None
    path: str
    url: str
    snippet: str
    position: int

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def to_hits(metadata, scores: np.ndarray, positions: np.ndarray, k: int,
            exclude: np.ndarray | None = None) -> list[list[Hit]]:
    """One list of at most ``k`` hits per query row, ``exclude[i]`` left out of row ``i``.

    Args:
        metadata: The index's :class:`~retrieval.storage.Metadata`.
        scores: ``(n_queries, m)`` scores, best first.
        positions: ``(n_queries, m)`` positions (``-1``: no result).
        k: Hits per query.
        exclude: Per-row position to leave out (the query item itself).
    """
    rows = metadata.rows(np.unique(positions[positions >= 0]))
    by_pos = {row["position"]: row for row in rows}
    out = []
    for qi in range(len(positions)):
        hits = []
        for score, pos in zip(scores[qi], positions[qi]):
            if pos < 0 or (exclude is not None and pos == exclude[qi]) or len(hits) == k:
                continue
            row = by_pos[int(pos)]
            hits.append(Hit(rank=len(hits) + 1, score=float(score), id=row["id"], title=row["title"] or "",
                            label=row["label"], path=row["path"] or "", url=row["url"] or "",
                            snippet=row["snippet"] or "", position=int(pos)))
        out.append(hits)
    return out
