"""Novelty from reconstruction error: how unlike the indexed collection an item is.

An autoencoder reconstructs what resembles its training data well and
anything else badly (the one-class / anomaly-detection use of autoencoders).
Every item's score is stored at build time (``novelty.npy``, in position
order) beside the sorted scores of the items the models were trained on
(``novelty_reference.npy``), so a query's score becomes a percentile: "99th"
means "less like the collection than 99 % of its own items".

Documents: the decoder's cross-entropy of the document's word distribution,
with the words TF-IDF cannot see (outside the vocabulary) each charged as a
uniform guess, ``log(vocabulary)``: a text in another language or a
base64 blob is mostly such words. Images: mean binary cross-entropy per pixel.
"""
from __future__ import annotations

import numpy as np

from .errors import IndexFormatError

#: The method whose autoencoder scores novelty (its decoder reconstructs).
METHOD = "ae"
#: Additions whose mean novelty percentile exceeds this are unlike the data
#: the models learned from. A model fits its own training items better than
#: new ones of the same kind: 998 held-out 20NG training postings added to an
#: index of the others averaged the 71st percentile (BENCHMARKS.md).
DRIFT_PERCENTILE = 85.0
#: ... and so is a collection that grew by more than this fraction since training.
DRIFT_GROWTH = 0.25


def item_novelty(encoder, inputs, oov: np.ndarray | None = None) -> np.ndarray:
    """Novelty scores ``(n,)`` float32 of model inputs.

    Args:
        encoder: A fitted autoencoder with its decoder.
        inputs: TF-IDF rows or uint8 images.
        oov: Documents only: the fraction of each text's tokens outside the
            vocabulary (:meth:`TextVectorizer.oov_fraction`).
    """
    errors = encoder.reconstruction_error(inputs).astype(np.float64)
    if oov is not None:
        vocabulary = inputs.shape[1]
        errors = (1 - oov) * errors + oov * np.log(vocabulary)
    return errors.astype(np.float32)


def percentile(reference: np.ndarray, scores) -> np.ndarray:
    """Percent of the reference scores at or below each score (0-100)."""
    reference = np.asarray(reference)
    if not len(reference):
        return np.full(np.shape(scores), np.nan)
    return 100.0 * np.searchsorted(reference, scores, side="right") / len(reference)


def summary(reference: np.ndarray) -> dict:
    """The manifest's ``novelty`` record: how the training items' scores are distributed."""
    ref = np.asarray(reference)
    return {"method": METHOD, "reference_items": int(len(ref)), "reference_mean": float(ref.mean()) if len(ref) else None,
            "reference_p50": float(np.median(ref)) if len(ref) else None,
            "reference_p99": float(np.quantile(ref, 0.99)) if len(ref) else None}


def save(folder, scores: np.ndarray, reference: np.ndarray) -> dict:
    """Write the per-item scores and the sorted reference into an index folder; returns :func:`summary`.

    Args:
        folder: The :class:`~retrieval.storage.IndexFolder`.
        scores: Every item's score, position order.
        reference: The scores of the items the models were trained on.
    """
    reference = np.sort(np.asarray(reference, np.float32))
    np.save(folder.novelty, np.asarray(scores, np.float32))
    np.save(folder.novelty_reference, reference)
    return summary(reference)


def load(folder) -> tuple[np.ndarray, np.ndarray]:
    """``(scores in position order, sorted reference)`` of an index folder."""
    try:
        return (np.load(folder.novelty, allow_pickle=False),
                np.load(folder.novelty_reference, allow_pickle=False))
    except FileNotFoundError:
        raise IndexFormatError(f"{folder.root.name} has no novelty scores (built by an older retrieval); "
                               "rebuild it with --force or run 'retrieval retrain'") from None


def drift(trained_items: int, added: int = 0, removed: int = 0, percentile_sum: float = 0.0,
          score_sum: float = 0.0) -> dict:
    """The manifest's drift record and whether a retrain is recommended.

    Args:
        trained_items: Items the models were fitted on.
        added: Items added since (replacements included).
        removed: Items removed since.
        percentile_sum: Sum of the added items' novelty percentiles.
        score_sum: Sum of the added items' novelty scores (reconstruction errors).
    """
    mean_pct = percentile_sum / added if added else None
    reasons = []
    if trained_items and added > DRIFT_GROWTH * trained_items:
        reasons.append(f"{added} items added since training, more than {DRIFT_GROWTH:.0%} of the "
                       f"{trained_items} trained on")
    if mean_pct is not None and mean_pct > DRIFT_PERCENTILE:
        reasons.append(f"the additions' mean novelty is at the {mean_pct:.0f}th percentile of the training "
                       f"items (above {DRIFT_PERCENTILE:.0f}): they are unlike what the models learned")
    return {"trained_items": trained_items, "added_since_training": added, "removed_since_training": removed,
            "added_novelty_percentile_sum": float(percentile_sum), "added_novelty_percentile_mean": mean_pct,
            "added_novelty_sum": float(score_sum), "added_novelty_mean": score_sum / added if added else None,
            "retrain_recommended": bool(reasons),
            "reasons": reasons}
