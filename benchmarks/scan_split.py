"""One query's exact Hamming scan on one thread against split over two, interleaved query by query.

    python benchmarks/scan_split.py --home H --name NAME --queries DOCS.jsonl [--method ae] [--rounds 2]

The whole in-process ``Retriever.search`` of text queries (the first 8 words
of each line of ``--queries``, as ``segments_bench.py latency``), k = 10,
under three settings switched before every query, so that all three see the
same machine (this machine's speed drifted by 2x within an hour):

- ``split``: FAISS' thread count 2, the scan split (``SPLIT_SCAN_CODES``);
- ``whole``: thread count 2, the scan never split (what the code did before);
- ``one-thread``: thread count 1 (``OMP_NUM_THREADS=1``; never split).

Prints one JSON line: the p50 wall and CPU milliseconds of each setting.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import faiss

from retrieval import ann
from segments_bench import _queries, add_index_query_options  # the latency command's queries (benchmarks/ is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_index_query_options(parser)
    parser.add_argument("--method", default="ae")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from retrieval import Store
    from retrieval.search import Retriever

    retriever = Retriever(args.name, Store(args.home))
    queries = _queries(retriever, args)
    settings = {"split": (2, ann.SPLIT_SCAN_CODES), "whole": (2, 10**12), "one-thread": (1, 10**12)}
    wall: dict[str, list[float]] = {s: [] for s in settings}
    cpu: dict[str, list[float]] = {s: [] for s in settings}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for text in queries if round_ else queries[:5]:
            for setting, (threads, split) in settings.items():
                faiss.omp_set_num_threads(threads)
                ann.SPLIT_SCAN_CODES = split
                c, w = time.process_time(), time.perf_counter()
                retriever.search(text, 10, args.method)
                if round_:
                    wall[setting].append(time.perf_counter() - w)
                    cpu[setting].append(time.process_time() - c)
    print(json.dumps({"method": args.method, "items": len(retriever.metadata), "queries": len(queries),
                      "rounds": args.rounds, "load": round(os.getloadavg()[0], 1),
                      **{s: {"p50_wall_ms": round(1000 * statistics.median(wall[s]), 3),
                             "p50_cpu_ms": round(1000 * statistics.median(cpu[s]), 3)} for s in settings}}))


if __name__ == "__main__":
    main()
