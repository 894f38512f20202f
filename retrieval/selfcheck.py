"""The build-time self-check: did the autoencoder learn something, judged without labels?

A user's corpus has no labels to evaluate on, yet a build can still tell a
working autoencoder from a broken one. A seeded sample of the collection
queries it (each sampled item searches the rest of the collection, itself
left out) with the autoencoder and with each baseline; the top-10 lists are
compared. Codes that capture the corpus' topics share neighbours with LSA
and TF-IDF (PCA and pixels for images) far above the chance level
``k / (n - 1)``; the overlap between the two baselines shows what agreement
between two sensible methods looks like on this corpus. The codes of the
sample and the training history are checked for the usual failures:
collapsed codes (constant units, a tiny effective rank, every code pointing
the same way) and a loss that did not fall.

The check costs a few transforms and searches of the sample (under a second
on 20 Newsgroups), so every build and retrain runs it; the result is the
manifest's ``self_check`` entry, and each failure is a
:class:`~retrieval.errors.RetrievalWarning`.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from .config import SELF_CHECK_K, SELF_CHECK_MIN_ITEMS, SELF_CHECK_SAMPLE
from .errors import RetrievalWarning

#: A unit whose standard deviation over the sample is below this fraction of
#: the largest unit's (or below :data:`_TINY` absolutely) carries nothing.
_DEAD_RATIO = 1e-3
_TINY = 1e-6
#: Codes collapse when more than this fraction of units are dead, when their
#: effective rank is below :data:`_MIN_RANK`, or when their mean pairwise
#: cosine is above :data:`_MAX_COSINE` (every code points the same way).
_DEAD_FRACTION = 0.5
_MIN_RANK = 1.5
_MAX_COSINE = 0.9
#: Training "did not learn" when the best validation loss is not at least
#: this much (relative) below the first epoch's.
_LOSS_DROP = 0.01
#: The autoencoder agrees with a baseline when its overlap exceeds chance by
#: at least this much, and by this fraction of what the baselines' overlap
#: with each other exceeds it.
_MIN_EXCESS = 0.02
_BASELINE_FRACTION = 0.25


def sample_rows(n: int, seed: int, size: int = SELF_CHECK_SAMPLE) -> np.ndarray:
    """The sorted positions of the seeded sample (at most ``size`` of ``n``)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def neighbours(encoder, index, inputs, rows: np.ndarray, k: int) -> np.ndarray:
    """``(len(rows), k)`` positions of each sampled item's nearest other items (itself left out)."""
    depth = min(k + 1, len(index))
    _, positions = index.search(encoder.transform(inputs[rows]), depth)
    is_self = positions == rows[:, None]
    # Drop the item itself; when a duplicate outranks it (self not among the
    # results), drop the last result instead so every row keeps k.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), depth - 1)
    keep = np.ones_like(positions, dtype=bool)
    keep[np.arange(len(rows)), drop] = False
    return positions[keep].reshape(len(rows), depth - 1)[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of shared positions between two ``(n, k)`` neighbour lists (missing ``-1`` never shared)."""
    shared = ((a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)).any(axis=2).sum(axis=1)
    return float((shared / max(a.shape[1], 1)).mean())


def code_health(codes: np.ndarray) -> dict:
    """Collapse diagnostics of float codes ``(n, d)``: dead units, effective rank, mean pairwise cosine."""
    codes = np.asarray(codes, dtype=np.float64)
    n, dim = codes.shape
    std = codes.std(axis=0)
    dead = int((std < max(_TINY, _DEAD_RATIO * float(std.max(initial=0.0)))).sum())
    # Effective rank: exp of the entropy of the normalised covariance spectrum
    # (Roy & Vetterli 2007): d for isotropic codes, 1 when one direction carries all.
    values = np.clip(np.linalg.eigvalsh(np.cov(codes.T)) if n > 1 and dim > 1 else std ** 2, 0, None)
    total = values.sum()
    if total <= _TINY ** 2:
        rank = 0.0
    else:
        p = values[values > 0] / total
        rank = float(np.exp(-(p * np.log(p)).sum()))
    norms = np.linalg.norm(codes, axis=1)
    unit = codes[norms > _TINY] / norms[norms > _TINY, None]
    m = len(unit)
    # Mean cosine over distinct pairs, from the norm of the summed unit vectors.
    cosine = float((np.square(unit.sum(axis=0)).sum() - m) / (m * (m - 1))) if m > 1 else 1.0
    return {"units": int(dim), "dead_units": dead, "effective_rank": round(rank, 2),
            "mean_cosine": round(cosine, 4)}


def _float_codes(encoder, inputs) -> np.ndarray:
    """Codes as floats: binary codes become +-1 per bit."""
    codes = encoder.transform(inputs)
    if encoder.binary:
        from .encoders.hashing import unpack_bits

        return unpack_bits(codes, encoder.dim).astype(np.float32) * 2 - 1
    return codes


def loss_trend(history: dict | None) -> dict | None:
    """First and best loss of the autoencoder's training (validation loss when there was a held-out slice)."""
    if not history:
        return None
    key = "val_loss" if history.get("val_loss") else "loss"
    values = [v for v in history.get(key, []) if v is not None and np.isfinite(v)]
    if not values:
        return None
    return {"metric": key, "epochs": len(values), "first": round(values[0], 5), "best": round(min(values), 5)}


def run(encoders: dict, indexes: dict, inputs, *, linear: str, exact: str, seed: int,
        sample: int = SELF_CHECK_SAMPLE, k: int = SELF_CHECK_K) -> dict:
    """Run the self-check on a fitted, filled index; warns about each failure.

    Args:
        encoders: Fitted encoders by method (``ae`` and the baselines built).
        indexes: Their nearest-neighbour indexes holding every item of ``inputs``.
        inputs: The model inputs of every item, position order.
        linear: The linear baseline's method name (``lsa``, ``pca``).
        exact: The exact baseline's method name (``tfidf``, ``pixels``).
        seed: Seed of the sample.
        sample: Items sampled as queries.
        k: Neighbours compared.

    Returns:
        The manifest's ``self_check`` entry: ``{"items", "sample", "k",
        "chance", "overlap": {"ae~lsa", "ae~tfidf", "lsa~tfidf"}, "codes",
        "loss", "seconds", "warnings"}``.
    """
    started = time.perf_counter()
    n = inputs.shape[0]
    rows = sample_rows(n, seed, sample)
    k = min(k, n - 1)
    found = []
    result = {"items": int(n), "sample": int(len(rows)), "k": int(k), "chance": round(k / max(n - 1, 1), 5),
              "overlap": {}, "codes": None, "loss": None}
    ae = encoders["ae"]
    if k >= 1:
        lists = {m: neighbours(encoders[m], indexes[m], inputs, rows, k)
                 for m in ("ae", linear, exact) if m in encoders}
        methods = list(lists)
        for i, a in enumerate(methods):
            for b in methods[i + 1:]:
                result["overlap"][f"{a}~{b}"] = round(overlap(lists[a], lists[b]), 4)
        result["codes"] = code_health(_float_codes(ae, inputs[rows]))
        found += _agreement_warnings(result, linear, exact)
    result["loss"] = loss_trend(getattr(ae, "history_", None))
    found += _health_warnings(result)
    if n < SELF_CHECK_MIN_ITEMS:
        found.append(f"only {n} items: too few for the autoencoder to learn much or for the self-check to "
                     f"mean much (a few hundred at least); compare methods with 'retrieval evaluate'")
    result["warnings"] = found
    result["seconds"] = round(time.perf_counter() - started, 3)
    for message in found:
        warnings.warn(f"self-check: {message}", RetrievalWarning, stacklevel=3)
    return result


def _agreement_warnings(result: dict, linear: str, exact: str) -> list[str]:
    ours = {pair.split("~")[1]: v for pair, v in result["overlap"].items() if pair.startswith("ae~")}
    if not ours:
        return []
    chance = result["chance"]
    between = result["overlap"].get(f"{linear}~{exact}")
    floor = max(_MIN_EXCESS, _BASELINE_FRACTION * (between - chance) if between is not None else 0.0)
    if max(ours.values()) - chance >= floor:
        return []
    shown = ", ".join(f"{m} {v:.3f}" for m, v in ours.items())
    context = f", the baselines share {between:.3f} with each other" if between is not None else ""
    return [f"the autoencoder's top-{result['k']} neighbours barely agree with the baselines' (overlap {shown}; "
            f"chance {chance:.3f}{context}); its codes may not capture the collection's topics: "
            "try more --epochs, another --code-dim, or compare methods with 'retrieval evaluate'"]


def _health_warnings(result: dict) -> list[str]:
    out = []
    codes = result["codes"]
    if codes is not None:
        collapsed = []
        if codes["dead_units"] > _DEAD_FRACTION * codes["units"]:
            collapsed.append(f"{codes['dead_units']} of {codes['units']} code units are constant")
        if codes["units"] >= 4 and codes["effective_rank"] < _MIN_RANK:
            collapsed.append(f"effective rank {codes['effective_rank']:.2f} of {codes['units']}")
        if codes["mean_cosine"] > _MAX_COSINE:
            collapsed.append(f"mean pairwise cosine {codes['mean_cosine']:.2f}")
        if collapsed:
            out.append(f"the autoencoder's codes collapsed ({'; '.join(collapsed)}): items are hardly told apart; "
                       "rebuild with another --code-dim, more --epochs or more items")
    loss = result["loss"]
    if loss is not None and loss["epochs"] > 1 and loss["best"] > loss["first"] * (1 - _LOSS_DROP):
        out.append(f"the autoencoder's {loss['metric']} did not fall ({loss['first']:.4g} after the first epoch, "
                   f"best {loss['best']:.4g} over {loss['epochs']} epochs): it learned little after one epoch; "
                   "try more --epochs, --noise, or more items")
    return out


def summary(entry: dict | None) -> str:
    """One line for people: the overlaps beside chance, the codes' effective rank, the loss."""
    if not entry:
        return "self-check: not run (index built by an older retrieval)"
    parts = [f"{pair} {value:.2f}" for pair, value in entry["overlap"].items()]
    line = (f"self-check ({entry['sample']} sampled items, no labels): top-{entry['k']} overlap "
            f"{', '.join(parts) or 'n/a'} (chance {entry['chance']:.3f})")
    if entry.get("codes"):
        line += f"; ae codes: effective rank {entry['codes']['effective_rank']:.1f} of {entry['codes']['units']}"
    if entry.get("loss"):
        line += f"; {entry['loss']['metric']} {entry['loss']['first']:.4g} -> {entry['loss']['best']:.4g}"
    return line + ("; " + str(len(entry["warnings"])) + " warning(s)" if entry.get("warnings") else "; ok")
