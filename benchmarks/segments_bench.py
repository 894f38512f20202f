"""Index segments (issue 13): the cost of ``add`` against the index size, and of searching segments.

Three steps, each its own command (they take an index home built beforehand
with ``retrieval index docs ...``)::

    # grow a copy of index BASE to about N items by adds of CHUNK documents (JSONL), then compact it
    python benchmarks/segments_bench.py grow --home H --base s10k --name s1m --source docs-1m.jsonl \
        --skip 10000 --items 1000000 --chunk 100000 --compact
    # time `retrieval add` from the command line, one JSONL file of 1,000 documents after another
    python benchmarks/segments_bench.py cli-add --home H --name s1m add-1k-*.jsonl
    # query p50 of one index as it is (e.g. 1M documents with 64-bit codes), in-process
    python benchmarks/segments_bench.py latency --home H --name s1m64 --queries docs-20k.jsonl --methods ae
    # query p50 over SEGMENTS segments (the base and adds, automatic compaction off) against a compacted copy
    python benchmarks/segments_bench.py query --home H --base s10k --segments 10 --adds add-1k-*.jsonl \
        --queries docs-20k.jsonl

Every figure is printed as one JSON line. Wall times of ``cli-add`` include
the interpreter start and imports, as a user sees them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _emit(**record) -> None:
    print(json.dumps(record), flush=True)


def grow(args) -> None:
    """Copy the base index and add chunks of a JSONL corpus until it holds ``--items`` items."""
    import retrieval.writer as writer
    from retrieval import Store
    from retrieval.writer import add_items, compact

    if args.compact:
        writer.COMPACT_TIER_SEGMENTS = 10**9  # one compaction at the end instead
    store = Store(args.home)
    if store.exists(args.name):
        store.remove(args.name)
    shutil.copytree(store.path(args.base), store.path(args.name))
    items = store.read_manifest(args.name)["counts"]["items"]
    with open(args.source) as source, tempfile.TemporaryDirectory() as tmp:
        for _ in islice(source, args.skip):
            pass
        while items < args.items:
            chunk = Path(tmp) / "chunk.jsonl"
            lines = list(islice(source, min(args.chunk, args.items - items)))
            if not lines:
                break
            chunk.write_text("".join(lines))
            started = time.perf_counter()
            report = add_items(store, args.name, chunk)
            items = report.items
            _emit(step="grow", added=report.added, items=items, segments=report.segments,
                  compacted=report.compacted, seconds=round(time.perf_counter() - started, 2))
    if args.compact:
        started = time.perf_counter()
        report = compact(store, args.name)
        _emit(step="compact", segments_before=report.segments_before, items=report.items,
              seconds=round(time.perf_counter() - started, 2))
    sizes = [s["items"] for s in store.read_manifest(args.name)["segments"]]
    _emit(step="grown", items=items, segment_sizes=sizes,
          disk_mb=round(sum(store.disk_usage(args.name).values()) / 1e6, 1))


def cli_add(args) -> None:
    """Time ``retrieval add NAME FILE --json`` from the command line for each file.

    Wall time, and the CPU time (user + system) of the command: on a shared
    machine the wall time mostly measures the other processes.
    """
    import resource

    checkout = args.checkout or CHECKOUT
    env = {**os.environ, "PYTHONPATH": str(checkout), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for path in args.files:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "retrieval", "add", args.name, str(path), "--json",
                              "--index-dir", str(args.home)], capture_output=True, text=True, env=env, cwd=checkout)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        report = json.loads(out.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        _emit(step="cli-add", checkout=str(checkout), file=Path(path).name, wall_s=round(wall, 2),
              cpu_s=round(cpu, 2), library_s=report["seconds"], added=report["added"], items=report["items"],
              segments=report.get("segments"), compacted=report.get("compacted"), load=round(os.getloadavg()[0], 1))


def _queries(retriever, args) -> list[str]:
    """The first ``--words`` words of each of the first ``--n-queries`` texts of ``--queries`` that make a query."""
    from retrieval import EmptyQueryError

    with open(args.queries) as f:
        texts = [" ".join(json.loads(line)["text"].split()[:args.words]) for line in islice(f, args.n_queries)]
    queries = []
    for text in texts:
        try:
            retriever.query_inputs([text])
        except EmptyQueryError:  # stop words only: no query
            continue
        queries.append(text)
    return queries


def add_index_query_options(parser) -> None:
    """``--home --name --queries --n-queries --words``: one index and the text queries :func:`_queries` reads."""
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--queries", type=Path, required=True, help="JSONL; the first --words words of each text")
    parser.add_argument("--n-queries", type=int, default=500)
    parser.add_argument("--words", type=int, default=8)


def _timed(retriever, query, method, k) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    retriever.search(query, k, method)
    return time.perf_counter() - wall, time.process_time() - cpu


def query(args) -> None:
    """Query p50 over segments against one compacted segment (in-process, the whole ``Retriever.search``).

    The two indexes hold the same items; each query is timed on one, then on
    the other, so both see the same machine load. CPU time (of this process)
    is reported beside wall time: on a shared machine it varies less.
    """
    import retrieval.writer as writer
    from retrieval import Store
    from retrieval.search import Retriever
    from retrieval.writer import add_items, compact

    store = Store(args.home)
    name, single = f"{args.base}-seg{args.segments}", f"{args.base}-seg{args.segments}-compacted"
    for index in (name, single):
        if store.exists(index):
            store.remove(index)
    shutil.copytree(store.path(args.base), store.path(name))
    writer.COMPACT_TIER_SEGMENTS = 10**9  # the segments stay apart: this measures their cost
    for path in args.adds[:args.segments - 1]:
        add_items(store, name, path)
    shutil.copytree(store.path(name), store.path(single))
    started = time.perf_counter()
    report = compact(store, single)
    _emit(step="compact", index=single, seconds=round(time.perf_counter() - started, 2),
          segments_before=report.segments_before, items=report.items)
    opened = {}
    for index in (name, single):
        times = []
        for _ in range(3):
            begin = time.perf_counter()
            Retriever(index, store).close()
            times.append(time.perf_counter() - begin)
        opened[index] = round(statistics.median(times), 3)
    with Retriever(name, store) as segmented, Retriever(single, store) as compacted:
        queries = _queries(segmented, args)
        for method in args.methods:
            for query in queries[:5]:  # warm: models and indexes loaded
                _timed(segmented, query, method, args.k), _timed(compacted, query, method, args.k)
            times = {name: [], single: []}
            for query in queries:
                for index, retriever in ((name, segmented), (single, compacted)):
                    times[index].append(_timed(retriever, query, method, args.k))
            p50 = {index: [round(1000 * statistics.median(t[i] for t in rows), 3) for i in (0, 1)]
                   for index, rows in times.items()}
            _emit(step="query", method=method, k=args.k, queries=len(queries), items=len(segmented.metadata),
                  segments=len(segmented.manifest["segments"]), p50_wall_ms=p50[name][0], p50_cpu_ms=p50[name][1],
                  compacted_p50_wall_ms=p50[single][0], compacted_p50_cpu_ms=p50[single][1],
                  ratio_wall=round(p50[name][0] / p50[single][0], 3), ratio_cpu=round(p50[name][1] / p50[single][1], 3),
                  open_s=opened[name], compacted_open_s=opened[single])
    for index in (name, single):
        store.remove(index)


def latency(args) -> None:
    """Query p50 of one index (in-process, the whole ``Retriever.search``, after 5 warm-up queries)."""
    import faiss

    from retrieval import Store
    from retrieval.search import Retriever

    store = Store(args.home)
    started = time.perf_counter()
    retriever = Retriever(args.name, store)
    opened = time.perf_counter() - started
    with retriever:
        queries = _queries(retriever, args)
        for method in args.methods:
            for query in queries[:5]:
                _timed(retriever, query, method, args.k)
            times = [_timed(retriever, query, method, args.k) for query in queries]
            info = retriever.manifest["methods"][method]
            _emit(step="latency", method=method, index=info.get("index"), k=args.k, queries=len(queries),
                  items=len(retriever.metadata), segments=len(retriever.manifest["segments"]),
                  p50_wall_ms=round(1000 * statistics.median(t[0] for t in times), 3),
                  p99_wall_ms=round(1000 * float(sorted(t[0] for t in times)[int(0.99 * (len(times) - 1))]), 3),
                  p50_cpu_ms=round(1000 * statistics.median(t[1] for t in times), 3),
                  open_s=round(opened, 2), load=round(os.getloadavg()[0], 1),
                  faiss_threads=faiss.omp_get_max_threads())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grow")
    g.add_argument("--home", type=Path, required=True)
    g.add_argument("--base", required=True)
    g.add_argument("--name", required=True)
    g.add_argument("--source", type=Path, required=True)
    g.add_argument("--skip", type=int, default=0, help="lines of SOURCE to skip (those of the base index)")
    g.add_argument("--items", type=int, required=True)
    g.add_argument("--chunk", type=int, default=100_000)
    g.add_argument("--compact", action="store_true", help="no automatic compaction while growing; one at the end")
    c = sub.add_parser("cli-add")
    c.add_argument("--home", type=Path, required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--checkout", type=Path, help="the retrieval checkout to run (default: this one)")
    c.add_argument("files", nargs="+", type=Path)
    q = sub.add_parser("query")
    q.add_argument("--home", type=Path, required=True)
    q.add_argument("--base", required=True)
    q.add_argument("--segments", type=int, default=10)
    q.add_argument("--adds", nargs="+", type=Path, required=True)
    q.add_argument("--queries", type=Path, required=True, help="JSONL; the first --words words of each text")
    q.add_argument("--n-queries", type=int, default=500)
    q.add_argument("--words", type=int, default=8)
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--methods", nargs="+", default=["ae", "lsa", "tfidf"])
    lat = sub.add_parser("latency")
    add_index_query_options(lat)
    lat.add_argument("--k", type=int, default=10)
    lat.add_argument("--methods", nargs="+", default=["ae"])
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    {"grow": grow, "cli-add": cli_add, "query": query, "latency": latency}[args.command](args)


if __name__ == "__main__":
    main()
