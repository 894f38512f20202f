"""Retrieval quality and cost, every method of an index side by side.

The metric functions are pure functions over arrays; :func:`evaluate_index`
runs labelled queries through each method of an opened index.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from .ann import check_k
from .config import EVALUATE_K, QUERY_FIELDS
from .errors import InputError, RetrievalWarning

#: Labels a message names at most.
EXAMPLES = 5
from .progress import Progress, report
from .search import Retriever


def relevance(query_labels: np.ndarray, positions: np.ndarray, index_labels: np.ndarray) -> np.ndarray:
    """Boolean ``(n_queries, k)``: is the retrieved item of the query's label?

    Positions ``< 0`` (FAISS' "no result") are never relevant.
    """
    retrieved = index_labels[np.maximum(positions, 0)]
    return (retrieved == np.asarray(query_labels, dtype=object)[:, None]) & (positions >= 0)


def precision_at(rel: np.ndarray, k: int) -> np.ndarray:
    """Per-query precision of the first ``k`` results (missing results count as misses)."""
    return rel[:, :k].sum(axis=1) / k


def average_precision_at(rel: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-query AP@k = sum_{i<=k} P@i * rel_i / min(R, k).

    ``R`` is the number of relevant items in the index; queries with ``R = 0``
    score 0.
    """
    rel = rel[:, :k].astype(np.float64)
    precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    denom = np.minimum(np.asarray(n_relevant, dtype=np.float64), k)
    total = (precision * rel).sum(axis=1)
    return np.divide(total, denom, out=np.zeros_like(total), where=denom > 0)


def pr_curve(rel: np.ndarray, n_relevant: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (recall, precision) over queries at the given rank cut-offs."""
    hits = np.cumsum(rel, axis=1)[:, ranks - 1]
    precision = (hits / ranks).mean(axis=0)
    recall = (hits / np.maximum(np.asarray(n_relevant)[:, None], 1)).mean(axis=0)
    return recall, precision


@dataclass
class Queries:
    """Labelled queries in the index's input space.

    Attributes:
        inputs: TF-IDF rows (docs) or uint8 images (images), one per query.
        labels: Label of each query.
        raw: What a user would send for the latency measurement: the text,
            or the image encoded as PNG bytes (so decoding is timed too).
        field: The part of each query document that is the query (one of
            :data:`retrieval.config.QUERY_FIELDS`).
    """

    inputs: object
    labels: np.ndarray
    raw: list
    field: str = QUERY_FIELDS[0]

    @classmethod
    def of_items(cls, retriever: Retriever, items: list, inputs=None, *,
                 query_field: str = QUERY_FIELDS[0]) -> "Queries":
        """Labelled items (read already) as queries of ``query_field`` (see :meth:`Modality.select_queries`)."""
        inputs, items, raw = retriever.modality.select_queries(retriever.state, items, inputs, query_field=query_field)
        return cls._checked(inputs, items, raw, query_field, "the queries given")

    @classmethod
    def _checked(cls, inputs, items, raw, query_field: str, source) -> "Queries":
        if not items:
            raise InputError(f"no labelled queries in {source}; use --labels-from-folders "
                             "(a sub-folder per label) or a 'label' field in JSONL")
        return cls(inputs, np.array([it.label for it in items], dtype=object), raw, query_field)


def load_queries(retriever: Retriever, source, *, labels_from_folders: bool = False,
                 strip: str | None = None, limit: int | None = None,
                 query_field: str = QUERY_FIELDS[0]) -> Queries:
    """Read labelled queries and bring them into the index's input space.

    Args:
        retriever: The opened index.
        source: Labelled query documents or images (the kinds of source an index is built from).
        labels_from_folders: Label = sub-folder.
        strip: ``"email"`` for mail/newsgroup queries.
        limit: Use at most this many queries.
        query_field: The part of each query document that is the query:
            ``text`` (whole), ``title`` or ``first-line`` (see
            :data:`retrieval.config.QUERY_FIELDS`). Short queries with fewer
            than two words or no word of the vocabulary are left out, with
            one warning that counts them.
    """
    inputs, items, raw = retriever.modality.read_queries(retriever.state, source, labels_from_folders=labels_from_folders,
                                                         strip=strip, limit=limit, query_field=query_field)
    return Queries._checked(inputs, items, raw, query_field, source)


def _latency_ms(retriever: Retriever, method: str, raw: list, k: int, samples: int,
                shortlist: int | None = None) -> float:
    """Median in-process time of one query: vectorize/decode + encode + search (+ re-rank)."""
    times = []
    for i in range(samples):
        query = raw[i]
        started = time.perf_counter()
        retriever.rank(retriever.query_inputs([query]), k, method, shortlist=shortlist)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def default_methods(retriever: Retriever) -> list[str]:
    """Every method of the index, plus two-stage search behind each binary autoencoder.

    ``ae>tfidf`` is the Hamming shortlist of ``ae`` re-ranked by TF-IDF
    cosine; ``ae>tfidf-prf`` the same with pseudo-relevance feedback;
    ``ae>float`` re-ranked by ``ae-float``; ``ae>tfidf+float`` by the sum of
    both cosines; ``ae>pixels`` by pixel distance (images).
    """
    methods = list(retriever.methods)
    have_inputs = retriever.has_inputs()
    for method in retriever.methods:
        if f"{method}-float" not in retriever.manifest["methods"]:
            continue  # only a learned binary autoencoder has float codes beside its bits
        for rerank in retriever.modality.rerankers:
            if rerank != "none" and (have_inputs or rerank == "float"):
                methods.append(f"{method}>{rerank}")
    return methods


def evaluate_index(retriever: Retriever, queries: Queries, *, k: int = EVALUATE_K, methods: list[str] | None = None,
                   latency_samples: int = 200, curves: bool = False, shortlist: int | None = None,
                   progress: Progress | None = None) -> dict:
    """Evaluate every method of an index on labelled queries.

    A hit is a retrieved item with the query's label.

    Args:
        retriever: The opened index.
        queries: Labelled queries from :func:`load_queries`.
        k: Depth of the ranking scored (precision@k, mAP@k).
        methods: Methods to compare (default: :func:`default_methods`);
            ``"METHOD>RERANKER"`` is two-stage search.
        latency_samples: Single queries timed per method.
        curves: Also compute precision-recall curves over the whole ranking
            (single-stage methods only).
        shortlist: Hamming shortlist size of two-stage methods.
        progress: Progress callback.

    Returns:
        ``{"index", "queries", "query_field", "k", "methods": {m: {"precision@10", "precision@k",
        "map@k", "query_ms_p50", "bytes_per_item"}}}`` and, with ``curves``,
        ``"curves": {m: {"recall": [...], "precision": [...]}}``.
    """
    k = check_k(k)
    index_labels = retriever.metadata.labels()
    if not len(index_labels):
        raise InputError(f"index {retriever.name!r} holds no items; add some with "
                         f"'retrieval add {retriever.name} SOURCE' before evaluating it")
    if all(label is None for label in index_labels):
        raise InputError(f"index {retriever.name!r} has no labels; rebuild it with --labels-from-folders "
                         "or labelled JSONL to evaluate it")
    n_items = len(index_labels)
    # precision@10 is always over ten results, also when k < 10.
    depth = min(max(k, 10), n_items)
    counts = {label: int(c) for label, c in zip(*np.unique(index_labels[index_labels != None], return_counts=True))}  # noqa: E711
    n_relevant = np.array([counts.get(label, 0) for label in queries.labels])
    queries, n_relevant = _known_labels(retriever, queries, n_relevant, counts)
    methods = methods or default_methods(retriever)
    result = {"index": retriever.name, "queries": int(len(queries.labels)), "query_field": queries.field, "k": k,
              "methods": {}}
    if curves:
        result["curves"] = {}
    for step, method in enumerate(methods):
        report(progress, "evaluate", step, len(methods), method=method)
        base, rerank = retriever.split_method(method)
        _, positions = retriever.rank(queries.inputs, depth, method, shortlist=shortlist)
        rel = relevance(queries.labels, positions, index_labels)
        row = {"precision@10": float(precision_at(rel, 10).mean()),
               f"precision@{k}": float(precision_at(rel, k).mean())}
        row[f"map@{k}"] = float(average_precision_at(rel, n_relevant, k).mean())
        row["query_ms_p50"] = _latency_ms(retriever, method, queries.raw,
                                          k, min(latency_samples, len(queries.labels)), shortlist)
        row["bytes_per_item"] = _bytes_per_item(retriever, base or retriever.default_method, rerank)
        result["methods"][method] = row
        if curves and rerank is None:
            encoder, index = retriever.method(method)
            sample = _curve_sample(len(queries.labels))
            codes = encoder.transform(queries.inputs[sample])
            result["curves"][method] = _curve(index, codes, queries.labels[sample], index_labels,
                                              n_relevant[sample])
    report(progress, "evaluate", len(methods), len(methods))
    return result


def _known_labels(retriever: Retriever, queries: Queries, n_relevant: np.ndarray,
                  counts: dict) -> tuple[Queries, np.ndarray]:
    """The queries whose label the index has (and their relevant counts); the others are left out.

    Left out, not scored 0: a query of a label the index lacks has no right
    answer, so a 0 for it measures the query set, not the method (the figures
    of a partly matching query folder would otherwise drop with every extra
    label in it). One warning names those labels; when no query is left the
    evaluation is an error (wrong folder, or labels not read from folders).
    """
    known = n_relevant > 0
    if known.all():
        return queries, n_relevant
    unknown = sorted({str(label) for label in queries.labels[~known]})
    names = ", ".join(map(repr, unknown[:EXAMPLES])) + (", ..." if len(unknown) > EXAMPLES else "")
    if not known.any():
        have = ", ".join(map(repr, sorted(map(str, counts))[:EXAMPLES])) + (", ..." if len(counts) > EXAMPLES else "")
        raise InputError(f"none of the {len(known)} queries has a label of index {retriever.name!r} (query labels "
                         f"{names}; index labels {have}); name the query folders like the index's labels and "
                         "pass --labels-from-folders, or give JSONL with those 'label's")
    warnings.warn(f"{int((~known).sum())} of {len(known)} queries have labels the index does not have ({names}); "
                  "they are left out of the figures (check --labels-from-folders and the query folders)",
                  RetrievalWarning, stacklevel=3)
    rows = np.flatnonzero(known)
    kept = Queries(queries.inputs[rows], queries.labels[rows], [queries.raw[i] for i in rows], queries.field)
    return kept, n_relevant[rows]


def _bytes_per_item(retriever: Retriever, method: str, rerank: str | None) -> float:
    """Index bytes per item; two-stage methods add what their re-ranker reads."""
    methods = retriever.manifest["methods"]
    size = float(methods[method]["bytes_per_item"])
    for part in (rerank or "none").split("+"):
        if part == "float":
            size += float(methods[f"{method}-float"]["bytes_per_item"])
        elif part != "none":
            shards = retriever.modality.input_shards(retriever.folder.inputs(retriever.modality))
            size += sum(shard.stat().st_size for shard in shards) / max(1, retriever.manifest["counts"]["items"])
    return size


#: Precision-recall curves rank the whole index for each query; a seeded
#: sample of this many queries draws the same curve at a fraction of the cost.
CURVE_QUERIES = 1000


def _curve_sample(n: int) -> np.ndarray:
    if n <= CURVE_QUERIES:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, CURVE_QUERIES, replace=False))


def _curve(index, codes, query_labels, index_labels, n_relevant, block: int = 500) -> dict:
    """Precision-recall over the whole ranking, at log-spaced ranks."""
    n = len(index_labels)
    ranks = np.unique(np.geomspace(1, n, num=60).astype(int))
    recall_sum = np.zeros(len(ranks))
    precision_sum = np.zeros(len(ranks))
    for start in range(0, len(query_labels), block):
        _, positions = index.search(codes[start:start + block], n)
        rel = relevance(query_labels[start:start + block], positions, index_labels)
        recall, precision = pr_curve(rel, n_relevant[start:start + block], ranks)
        weight = rel.shape[0]
        recall_sum += recall * weight
        precision_sum += precision * weight
    total = len(query_labels)
    return {"ranks": ranks.tolist(), "recall": (recall_sum / total).tolist(),
            "precision": (precision_sum / total).tolist()}
