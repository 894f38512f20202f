"""Share of codes an exact pruned binary IVF would scan, on a built index of binary codes.

    python benchmarks/binary_prune.py --home H --name NAME --queries DOCS.jsonl [--method ae] [--cells 1000 4000]

A code x in cell c (centroid c; the cell's radius r_c is the largest
distance of its codes to c) is at least d(q, c) - r_c from the query q, so
once the k-th distance D is known, only cells with d(q, c) - r_c <= D can
hold a hit as good: an exact search needs to scan only those. The script
encodes the query texts (the first 8 words of each line, as
``segments_bench.py latency``), finds D with the index's exact scan, trains
FAISS binary k-means cells (64 codes per cell), and prints per cell count
the radii, the share of codes such a search would scan (p50, p90), and
the p50 of that search (one thread; 8 nearest cells first, then exactly the
cells that can beat their k-th distance) against the index's exact scan,
with how many queries got the same k distances.

On an index whose method is already ``binary-pruned`` (the library's exact
pruned search, what ``--index flat`` builds from 262,144 codes on), it times
that search against a flat scan of the same codes instead, interleaved, and
counts the queries with the same hits and distances.
"""
from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from segments_bench import _queries, add_index_query_options  # the latency command's queries (benchmarks/ is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_index_query_options(parser)
    parser.add_argument("--method", default="ae")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cells", type=int, nargs="+", default=[1000, 4000])
    args = parser.parse_args()
    from retrieval import Store
    from retrieval.search import Retriever

    retriever = Retriever(args.name, Store(args.home))
    encoder, index = retriever.method(args.method)
    queries = [encoder.transform(retriever.query_inputs([text]))[0] for text in _queries(retriever, args)]
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    codes = np.ascontiguousarray(index.stored())
    if retriever.manifest["methods"][args.method]["index"] == "binary-pruned":
        library(index, codes, queries, args.k)
        return
    kth = -index.search(queries, args.k)[0][:, -1]
    n, nbytes = codes.shape
    words = codes.view(np.uint8)
    for nlist in args.cells:
        started = time.perf_counter()
        quantizer = faiss.IndexBinaryFlat(nbytes * 8)
        ivf = faiss.IndexBinaryIVF(quantizer, nbytes * 8, nlist)
        sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
        ivf.train(words[sample])
        centroids = faiss.vector_to_array(quantizer.xb).reshape(nlist, nbytes)
        to_centroid, cell = quantizer.search(words, 1)
        radius = np.full(nlist, -1)
        np.maximum.at(radius, cell[:, 0], to_centroid[:, 0])
        sizes = np.bincount(cell[:, 0], minlength=nlist)
        shares = []
        for query, bound in zip(queries, kth):
            d = np.bitwise_count(centroids ^ query).sum(axis=1)
            shares.append(sizes[(d - radius <= bound) & (sizes > 0)].sum() / n)
        # The search itself: 8 nearest cells give a first k-th distance, then exactly the cells that
        # can beat it are scanned (search_preassigned), against the index's own exact scan.
        ivf.add(words)
        faiss.omp_set_num_threads(1)
        pruned_ms, flat_ms, same = [], [], 0
        for query in queries:
            x = query[None]
            started_q = time.perf_counter()
            d = np.bitwise_count(centroids ^ query).sum(axis=1).astype(np.int32)
            first = np.argpartition(d, 8)[:8]
            ivf.nprobe = 8
            D, I = ivf.search_preassigned(x, args.k, first[None].astype(np.int64), d[first][None])
            bound = D[0, -1] if I[0, -1] >= 0 else nbytes * 8
            need = np.flatnonzero((d - radius <= bound) & (sizes > 0))
            ivf.nprobe = max(1, len(need))
            D, I = ivf.search_preassigned(x, args.k, need[None].astype(np.int64), d[need][None])
            pruned_ms.append(1000 * (time.perf_counter() - started_q))
            started_q = time.perf_counter()
            exact = index.search(x, args.k)[0]
            flat_ms.append(1000 * (time.perf_counter() - started_q))
            same += int(np.array_equal(-D.astype(np.float32), exact))
        print(json.dumps({"cells": nlist, "items": n, "queries": len(queries), "k": args.k,
                          "kth_distance_p50": float(np.median(kth)),
                          "radius_p50": float(np.median(radius[sizes > 0])),
                          "radius_p90": float(np.percentile(radius[sizes > 0], 90)),
                          "scan_share_p50": round(float(np.median(shares)), 3),
                          "scan_share_p90": round(float(np.percentile(shares, 90)), 3),
                          "train_assign_s": round(time.perf_counter() - started, 1),
                          "pruned_search_p50_ms": round(float(np.median(pruned_ms)), 3),
                          "flat_search_p50_ms": round(float(np.median(flat_ms)), 3),
                          "same_distances": f"{same}/{len(queries)}"}))


def library(index, codes: np.ndarray, queries: np.ndarray, k: int) -> None:
    """The index's own search (``BinaryPrunedIndex``) against a flat scan of its codes, interleaved query by query.

    Prints the p50 of both, one query at a time, and on how many queries the
    two give the same hits (positions, ties included) and the same distances.
    """
    from retrieval.ann import BinaryFlatIndex

    flat = BinaryFlatIndex()
    flat.add(codes)
    faiss.omp_set_num_threads(1)  # the flat scan on one thread, as the pruned search runs (no split)
    for query in queries[:5]:
        index.search(query[None], k), flat.search(query[None], k)
    pruned_ms, flat_ms, same_hits, same_distances = [], [], 0, 0
    for query in queries:
        x = query[None]
        started = time.perf_counter()
        got = index.search(x, k)
        pruned_ms.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        want = flat.search(x, k)
        flat_ms.append(1000 * (time.perf_counter() - started))
        same_hits += int(np.array_equal(got[1], want[1]))
        same_distances += int(np.array_equal(got[0], want[0]))
    print(json.dumps({"index": "binary-pruned", "cells": int(index.parts[0].index_.nlist) if hasattr(index, "parts")
                      else int(index.index_.nlist), "items": len(codes), "queries": len(queries), "k": k,
                      "pruned_search_p50_ms": round(float(np.median(pruned_ms)), 3),
                      "pruned_search_p90_ms": round(float(np.percentile(pruned_ms, 90)), 3),
                      "flat_search_p50_ms": round(float(np.median(flat_ms)), 3),
                      "flat_search_p90_ms": round(float(np.percentile(flat_ms, 90)), 3),
                      "same_hits": f"{same_hits}/{len(queries)}", "same_distances": f"{same_distances}/{len(queries)}"}))


if __name__ == "__main__":
    main()
