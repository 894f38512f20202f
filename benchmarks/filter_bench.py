"""Filtered search (issue 14): latency of a filter keeping 1 % of 60,000 items, and equality with brute force.

Two parts, each printing JSON lines (``"part"`` names them)::

    python benchmarks/filter_bench.py ann  [--data DIR] [--queries 200]
    python benchmarks/filter_bench.py full [--data DIR] [--queries 200] [--home DIR]

``ann``: the 60,000 Fashion-MNIST training images as 32-d PCA codes (PCA
fitted on a seeded 10,000-image sample of the training set) in the
project's exact cosine index (``retrieval.ann.FlatIndex``), queried with the
first ``--queries`` test images, k = 100, one query at a time. It prints the
p50 of the unfiltered search and of ``search_rows`` with a filter keeping
1 % (class 3 and every tenth item: 585 items), by both paths (exact scoring
of the kept rows, what the flat index always does; and FAISS' own scan with
an ``IDSelectorBitmap``, what the IVF and HNSW indexes do above
``FILTER_EXACT_ITEMS``); how many of the 100 hits a filter applied
after the search would have kept; and, for every query, whether the
filtered hits equal a brute-force filter-then-rank in float64 (same items;
scores within 1e-4). A selectivity sweep (0.1 % to 50 %) uses items of the
training set as queries (a validation split: the test images are only
measured).

``full``: the whole query path through the Python API (``Index.search``:
preprocessing, the autoencoder's NumPy forward pass, search, hits) on an
index of the same 60,000 images built by the project (small, 1-epoch
autoencoder and PCA: latency, not quality), unfiltered against
``where="label = :l AND CAST(id AS INTEGER) % 10 = 0"`` (1 %), with the
resolved filter cached (repeated filter) and resolved afresh each query
(cold), and a label filter (10 %).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def _emit(**record) -> None:
    print(json.dumps(record), flush=True)


def _load(data: Path):
    from retrieval.sources.images import read_idx

    return (read_idx(data / "train-images-idx3-ubyte.gz"), read_idx(data / "train-labels-idx1-ubyte.gz"),
            read_idx(data / "t10k-images-idx3-ubyte.gz"))


def _p50_interleaved(fns, queries) -> list[float]:
    """The p50 of each function, timed one query after another in turn."""
    for fn in fns:
        fn(queries[:1])  # warm-up
    times = [[] for _ in fns]
    for i in range(len(queries)):
        for fn, out in zip(fns, times):
            start = time.perf_counter()
            fn(queries[i:i + 1])
            out.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def _same(scores, positions, brute, allowed, k, atol=1e-4) -> bool:
    got = positions[positions >= 0]
    expected = np.sort(brute[allowed])[::-1][:k]
    return (len(got) == len(expected) and len(set(got.tolist())) == len(got) and bool(np.isin(got, allowed).all())
            and np.allclose(brute[got], expected, atol=atol) and np.allclose(scores[:len(got)], expected, atol=atol))


def ann(args) -> None:
    from retrieval.ann import FlatIndex
    from retrieval.config import FILTER_EXACT_ITEMS

    train, labels, test = _load(args.data)
    X = train.reshape(len(train), -1).astype(np.float32) / 255
    rng = np.random.default_rng(0)
    sample = X[rng.choice(len(X), 10_000, replace=False)]
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:32].T.astype(np.float32)
    codes = (X - mean) @ components
    index = FlatIndex("cosine")
    index.add(codes)
    queries = ((test[:args.queries].reshape(args.queries, -1).astype(np.float32) / 255) - mean) @ components
    k = 100
    allowed = np.flatnonzero((labels == 3) & (np.arange(len(labels)) % 10 == 0))
    stored = index.stored().astype(np.float64)

    def via_selector(q, keep):
        # FlatIndex always scores a filter exactly (exact_filters); this measures FAISS' scan
        # with an IDSelectorBitmap, the path of the other FAISS backends, on the same index.
        index.exact_filters = False
        try:
            return index.search_rows(q, k, keep, exact_items=0)
        finally:
            del index.exact_filters

    unfiltered, exact, selector = _p50_interleaved(
        [lambda q: index.search(q, k), lambda q: index.search_rows(q, k, allowed),
         lambda q: via_selector(q, allowed)], queries)
    equal = {"exact": 0, "selector": 0}
    post_kept = []
    for qi in range(len(queries)):
        q = queries[qi:qi + 1].astype(np.float64)
        brute = (q / np.linalg.norm(q)) @ stored.T
        for path in ("exact", "selector"):
            search = via_selector if path == "selector" else lambda q, keep: index.search_rows(q, k, keep)
            scores, positions = search(queries[qi:qi + 1], allowed)
            equal[path] += _same(scores[0], positions[0], brute[0], allowed, k)
        _, top = index.search(queries[qi:qi + 1], k)
        post_kept.append(int(np.isin(top[0], allowed).sum()))
    _emit(part="ann", items=len(codes), dim=32, k=k, queries=len(queries), filter_items=len(allowed),
          filter_share=round(len(allowed) / len(codes), 4), exact_items=FILTER_EXACT_ITEMS,
          p50_unfiltered_ms=round(unfiltered, 3), p50_filtered_ms=round(exact, 3),
          p50_filtered_selector_ms=round(selector, 3), ratio=round(exact / unfiltered, 2),
          equal_to_brute_force={p: f"{n}/{len(queries)}" for p, n in equal.items()},
          post_filter_hits_kept_mean=round(float(np.mean(post_kept)), 2))
    # Selectivity sweep, validation queries (training items), both paths.
    val = codes[rng.choice(len(codes), args.queries, replace=False)]
    for share in (0.001, 0.01, 0.05, 0.1, 0.5):
        keep = np.sort(rng.choice(len(codes), int(share * len(codes)), replace=False))
        times = _p50_interleaved([lambda q: index.search(q, k), lambda q: index.search_rows(q, k, keep),
                                  lambda q: via_selector(q, keep)], val)
        _emit(part="ann-sweep", share=share, filter_items=len(keep),
              **{f"p50_{name}_ms": round(t, 3) for name, t in zip(("unfiltered", "exact", "selector"), times)})


def full(args) -> None:
    from retrieval import Index, Store
    from retrieval.search.filters import Filter

    train, labels, test = _load(args.data)
    home = Path(args.home or tempfile.mkdtemp(prefix="filter-bench-"))
    store = Store(home)
    names = [CLASSES[int(v)] for v in labels]
    if (home / "fashion-filter").exists():
        idx = Index.open("fashion-filter", store)
    else:
        start = time.perf_counter()
        idx = Index.build_images(train, labels=names, name="fashion-filter", store=store, force=True,
                                 code_dim=32, filters=(8, 16), epochs=1, patience=1, train_sample=5000,
                                 baselines=("pca",), augment=0.0)
        _emit(part="full-build", seconds=round(time.perf_counter() - start, 1), home=str(home))
    queries = test[:args.queries]
    k = 100
    where = {"where": "label = :l AND CAST(id AS INTEGER) % 10 = 0", "params": {"l": "dress"}}
    r = idx.retriever
    flt = Filter.make(**where)
    allowed = r.allowed(flt)
    rows = r.metadata.rows(allowed[:5])
    assert all(row["label"] == "dress" and int(row["id"]) % 10 == 0 for row in rows)

    def search(q, **filters):
        return idx.search(q[0], k=k, **filters)

    def cold(q, method):
        r._filters._cache.clear()  # resolve the filter again: its SQL scans every item row
        return idx.search(q[0], k=k, method=method, **where)

    for method in ("ae", "pca"):
        # Interleaved, query by query: a load that drifts during the run weighs on every variant alike.
        unfiltered, warm, fresh, label = _p50_interleaved(
            [lambda q: search(q, method=method), lambda q: search(q, method=method, **where),
             lambda q: cold(q, method), lambda q: search(q, method=method, label="dress")], queries)
        # Equality with brute force filter-then-rank over the method's stored codes.
        encoder, index = r.method(method)
        metric = r.manifest["methods"][method]["metric"]
        stored = index.stored().astype(np.float64)
        equal = 0
        for i in range(len(queries)):
            hits = idx.search(queries[i], k=k, method=method, **where)
            q = encoder.transform(r.query_inputs([queries[i]])).astype(np.float64)
            if metric == "l2":
                brute = -np.sqrt(((stored - q) ** 2).sum(axis=1))[None]
            else:  # cosine: the stored rows are normalised
                brute = (q / np.linalg.norm(q)) @ stored.T
            positions = np.array([h.position for h in hits])
            equal += _same(np.array([h.score for h in hits]), positions, brute[0], allowed, k)
        _emit(part="full", method=method, metric=metric, items=len(idx), k=k, queries=len(queries), filter_items=len(allowed),
              filter_share=round(len(allowed) / len(idx), 4), p50_unfiltered_ms=round(unfiltered, 3),
              p50_where_1pct_cached_ms=round(warm, 3),
              p50_where_1pct_cold_ms=round(fresh, 3),
              p50_label_10pct_ms=round(label, 3), ratio_cached=round(warm / unfiltered, 2),
              equal_to_brute_force=f"{equal}/{len(queries)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["ann", "full"])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--home", help="full: index home (reused when it holds the index)")
    args = parser.parse_args()
    _emit(part="machine", cpus=os.cpu_count(), load=os.getloadavg()[0])
    ann(args) if args.part == "ann" else full(args)


if __name__ == "__main__":
    main()
