"""Novelty from reconstruction error: how unlike the indexed collection an item is.

An autoencoder reconstructs what resembles its training data well and
anything else badly (the one-class / anomaly-detection use of autoencoders).
Every item's score is stored when it is indexed (``novelty.npy`` of its
segment, in position order) beside the sorted scores of the items the models were trained on
(``novelty_reference.npy``), so a query's score becomes a percentile: "99th"
means "less like the collection than 99 % of its own items".

Documents: the decoder's cross-entropy of the document's word distribution,
with the words TF-IDF cannot see (outside the vocabulary) each charged as a
uniform guess, ``log(vocabulary)``: a text in another language or a
base64 blob is mostly such words. Images: mean binary cross-entropy per pixel.
"""
from __future__ import annotations

import numpy as np

from .config import NOVELTY_MIN_ITEMS, NOVELTY_TYPICAL_PERCENTILE, NOVELTY_UNLIKE_PERCENTILE
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


def judge(reference: np.ndarray, scores) -> list[dict]:
    """What a query's (or item's) novelty says, one dict per score.

    Returns:
        ``{"score", "percentile", "reference_items", "verdict"}``; the
        verdict is ``unlike`` (nothing like it is indexed), ``typical``,
        ``ordinary`` (in between) or ``unjudged``: with fewer than
        :data:`~retrieval.config.NOVELTY_MIN_ITEMS` reference items a
        percentile is too coarse, and the model too little trained, to call
        a query unlike the collection (measured: a one-word query whose word
        is in 15 of 45 indexed documents scored above all 45).
    """
    reference = np.asarray(reference)
    scores = np.atleast_1d(np.asarray(scores))
    n = len(reference)
    out = []
    for score, pct in zip(scores, np.atleast_1d(percentile(reference, scores))):
        if n < NOVELTY_MIN_ITEMS:
            verdict = "unjudged"
        elif pct >= NOVELTY_UNLIKE_PERCENTILE:
            verdict = "unlike"
        elif pct <= NOVELTY_TYPICAL_PERCENTILE:
            verdict = "typical"
        else:
            verdict = "ordinary"
        out.append({"score": float(score), "percentile": float(pct), "reference_items": n, "verdict": verdict})
    return out


def describe(novelty: dict) -> str:
    """The one line ``retrieval query`` prints about a query's novelty (a :func:`judge` dict)."""
    line = (f"novelty of the query: reconstruction error {novelty['score']:.3f}, "
            f"higher than {novelty['percentile']:.0f} % of the indexed items")
    verdict = novelty.get("verdict")
    if verdict == "unlike":
        return line + " (nothing like it is indexed)"
    if verdict == "unjudged":
        return line + (f" (too few to judge: the models learned from {novelty['reference_items']} items, "
                       f"a verdict takes {NOVELTY_MIN_ITEMS})")
    return line


def summary(reference: np.ndarray) -> dict:
    """The manifest's ``novelty`` record: how the training items' scores are distributed."""
    ref = np.asarray(reference)
    return {"method": METHOD, "reference_items": int(len(ref)), "reference_mean": float(ref.mean()) if len(ref) else None,
            "reference_p50": float(np.median(ref)) if len(ref) else None,
            "reference_p99": float(np.quantile(ref, 0.99)) if len(ref) else None}


def save_reference(folder, reference: np.ndarray) -> dict:
    """Write the sorted scores of the training items into an index folder; returns :func:`summary`.

    (Every item's own score is part of its segment, see :mod:`retrieval.storage.layout`.)

    Args:
        folder: The :class:`~retrieval.storage.IndexFolder`.
        reference: The scores of the items the models were trained on.
    """
    reference = np.sort(np.asarray(reference, np.float32))
    np.save(folder.novelty_reference, reference)
    return summary(reference)


def load_reference(folder) -> np.ndarray:
    """The sorted reference scores of an index folder."""
    try:
        return np.load(folder.novelty_reference, allow_pickle=False)
    except FileNotFoundError:
        raise missing(folder.root.name) from None


def missing(name: str) -> IndexFormatError:
    """The error of an index built before novelty scores existed."""
    return IndexFormatError(f"{name} has no novelty scores (built by an older retrieval); "
                            "rebuild it with --force or run 'retrieval retrain'")


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
