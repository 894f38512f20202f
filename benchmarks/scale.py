"""Scale benchmark (issue #4): exact and sub-linear search of synthetic codes.

Reproduce the scale table of BENCHMARKS.md with::

    /work/venv/bin/python benchmarks/scale.py --sizes 1000000,10000000 --queries 1000 --seed 0

(a quick check: ``--sizes 100000 --queries 200``). Prints one Markdown table
per size on stdout (progress goes to stderr); ``--json OUT`` also writes the
raw figures, single-query latencies included.

Data. ``n / 100`` cluster centres are drawn from a 32-d standard Gaussian;
an item is a random centre plus Gaussian noise of scale ``--noise`` (0.5:
clusters overlap somewhat, most of an item's 100 nearest neighbours share its
cluster). The float code is that 32-d vector (searched by cosine); the 64-bit
code is the sign of a fixed random projection 32 -> 64 of the centred vector,
packed with ``np.packbits`` -- so both codes describe the same items, as an
autoencoder's float and binary codes do. Queries are fresh points drawn the
same way, not items of the set.

Methods (k = 100):

* ``float flat``: ``FlatIndex("cosine")``, exact scan of the 32-d codes.
* ``binary flat``: ``BinaryFlatIndex()``, exact Hamming scan of the 64-bit codes.
* ``binary IVF``: ``BinaryIVFIndex`` built once (default ``nlist`` of the
  library unless ``--nlist``), searched at each ``--nprobes`` value.
* ``two-stage M``: exact Hamming top-M shortlist (``BinaryFlatIndex``), then
  the M float codes re-ranked by cosine in NumPy to the top 100.

Figures:

* build s: construct + ``add`` (+ training, for IVF), from codes in memory,
  FAISS on all cores (its default).
* bytes/item: size of the file written by ``index.save`` / n; two-stage keeps
  both the binary index and the float codes (the float flat file).
* p50/p99 1 core: single queries one at a time through the public
  ``search`` with FAISS (and BLAS) limited to one thread.
* p50/p99 all cores: single queries through ``index.index_.search`` directly
  (queries already prepared), FAISS and BLAS on ``os.cpu_count()`` threads;
  the library's ``search`` would force one thread for batches of <= 16.
* batch q/s: every query in one ``index.index_.search`` call, all cores.
* recall@100: float flat and two-stage against the exact float search (set
  overlap); binary methods against the exact Hamming scan, tie-aware: a
  returned item counts when its Hamming distance is <= the query's exact
  100th-nearest distance.

Each single-query loop starts with a few warm-up queries and stops early once
it has timed ``--min-timed`` queries and spent ``--latency-budget`` seconds
(the exact float scan of 10M codes costs ~40 ms a query); the number timed is
printed under the table, with the 1-minute load average before and after.
Run it on an otherwise idle machine: with another job on the cores, every
multi-threaded FAISS call (all-core latencies, batches, IVF training) waits
on its OpenMP barriers and can come out several times slower than on one
thread; single-thread figures suffer much less.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - BLAS threads are then left alone
    threadpool_limits = None

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.ann import BinaryFlatIndex, BinaryIVFIndex, FlatIndex  # noqa: E402

DIM = 32
BITS = 64
K = 100
ITEMS_PER_CLUSTER = 100
CHUNK = 500_000  # rows generated at a time (bounds the temporaries)
WARMUP = 5
ALL_CORES = os.cpu_count() or 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def threads(n: int):
    """Limit FAISS' OpenMP pool (and NumPy's BLAS) to ``n`` threads."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with threadpool_limits(limits=n) if threadpool_limits else contextlib.nullcontext():
            yield
    finally:
        faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------- data


def make_data(n: int, n_queries: int, seed: int, noise: float):
    """Return (float codes, packed bits, query floats, query bits); floats L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // ITEMS_PER_CLUSTER), DIM), dtype=np.float32)
    mean = centres.mean(axis=0)
    projection = rng.standard_normal((DIM, BITS), dtype=np.float32)

    def draw(m: int, floats: np.ndarray, bits: np.ndarray) -> None:
        for start in range(0, m, CHUNK):
            stop = min(m, start + CHUNK)
            x = centres[rng.integers(len(centres), size=stop - start)]
            x += noise * rng.standard_normal(x.shape, dtype=np.float32)
            bits[start:stop] = np.packbits((x - mean) @ projection > 0, axis=1)
            x /= np.linalg.norm(x, axis=1, keepdims=True)  # cosine: store unit rows
            floats[start:stop] = x

    floats, bits = np.empty((n, DIM), np.float32), np.empty((n, BITS // 8), np.uint8)
    q_floats, q_bits = np.empty((n_queries, DIM), np.float32), np.empty((n_queries, BITS // 8), np.uint8)
    draw(n, floats, bits)
    draw(n_queries, q_floats, q_bits)
    return floats, bits, q_floats, q_bits


# ---------------------------------------------------------------- recall


def hamming(q_bits: np.ndarray, bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Exact Hamming distances (nq, k) from each query to the items at ``positions``."""
    codes = bits[np.maximum(positions, 0)]  # (nq, k, bytes)
    return np.bitwise_count(codes ^ q_bits[:, None, :]).sum(axis=2, dtype=np.int32)


def recall_hamming(positions, q_bits, bits, threshold) -> float:
    """Tie-aware recall@k: an item is right when within the exact k-th distance."""
    ok = (positions >= 0) & (hamming(q_bits, bits, positions) <= threshold[:, None])
    return float(ok.sum(axis=1).mean() / K)


def recall_float(positions, truth) -> float:
    return float(np.mean([len(np.intersect1d(p[p >= 0], t)) / K for p, t in zip(positions, truth)]))


# ---------------------------------------------------------------- timing


def build(make, codes) -> tuple[object, float]:
    with threads(ALL_CORES):
        t0 = time.perf_counter()
        index = make()
        index.add(codes)
        return index, time.perf_counter() - t0


def file_bytes(index) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return index.save(Path(folder)).stat().st_size


def single_latencies(search_one, n_queries: int, budget: float, min_timed: int) -> np.ndarray:
    """Milliseconds of ``search_one(i)`` for queries 0, 1, ... one at a time."""
    for i in range(min(WARMUP, n_queries)):
        search_one(i)
    times = []
    start = time.perf_counter()
    for i in range(n_queries):
        t0 = time.perf_counter()
        search_one(i)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if len(times) >= min_timed and t1 - start > budget:
            break
    return np.array(times) * 1e3


def measure(name, build_s, size_bytes, n, one_core, all_cores, batch, n_queries, args) -> dict:
    """Latencies on one core and on all cores, then the batch; returns figures + batch positions."""
    log(f"  {name}: single queries, 1 core")
    with threads(1):
        lat1 = single_latencies(one_core, n_queries, args.latency_budget, args.min_timed)
    log(f"  {name}: single queries, {ALL_CORES} cores; batch")
    with threads(ALL_CORES):
        latn = single_latencies(all_cores, n_queries, args.latency_budget, args.min_timed)
        t0 = time.perf_counter()
        positions = batch()
        batch_s = time.perf_counter() - t0
    return {
        "method": name, "build_s": build_s, "bytes_per_item": size_bytes / n,
        "p50_1core_ms": float(np.percentile(lat1, 50)), "p99_1core_ms": float(np.percentile(lat1, 99)),
        "p50_all_ms": float(np.percentile(latn, 50)), "p99_all_ms": float(np.percentile(latn, 99)),
        "timed_1core": len(lat1), "timed_all": len(latn), "batch_qps": n_queries / batch_s,
        "latencies_1core_ms": np.round(lat1, 4).tolist(), "latencies_all_ms": np.round(latn, 4).tolist(),
        "positions": positions,
    }


# ---------------------------------------------------------------- one size


def rerank(floats, q_float, candidates) -> np.ndarray:
    """Top-K of one query's candidate positions by cosine of the float codes."""
    candidates = candidates[candidates >= 0]
    sims = floats[candidates] @ q_float
    top = np.argpartition(-sims, K - 1)[:K] if len(sims) > K else np.arange(len(sims))
    return candidates[top[np.argsort(-sims[top], kind="stable")]]


def rerank_batch(floats, q_floats, candidates, block: int = 64) -> np.ndarray:
    out = np.full((len(q_floats), K), -1, np.int64)
    for s in range(0, len(q_floats), block):
        cand = candidates[s:s + block]
        sims = np.matmul(floats[np.maximum(cand, 0)], q_floats[s:s + block, :, None])[..., 0]
        sims[cand < 0] = -np.inf
        top = np.argpartition(-sims, K - 1, axis=1)[:, :K]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1, kind="stable"), 1)
        out[s:s + block] = np.take_along_axis(cand, top, 1)
    return out


def run_size(n: int, args) -> dict:
    nq = args.queries
    log(f"n = {n:,}: generating data")
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    floats, bits, qf, qb = make_data(n, nq, args.seed, args.noise)
    log(f"  {time.perf_counter() - t0:.1f} s")
    rows = []

    # 1. exact float search (cosine); its batch answer is the float ground truth.
    log("  float flat: build")
    flat, build_s = build(lambda: FlatIndex("cosine"), floats)
    flat_bytes = file_bytes(flat)
    rows.append(measure(
        "float flat (exact cosine, 32-d)", build_s, flat_bytes, n,
        lambda i: flat.search(qf[i:i + 1], K),
        lambda i: flat.index_.search(qf[i:i + 1], K),
        lambda: flat.index_.search(qf, K)[1], nq, args))
    float_truth = rows[-1]["positions"]
    rows[-1]["recall"], rows[-1]["recall_vs"] = recall_float(float_truth, float_truth), "exact float"
    del flat

    # 2. exact Hamming scan; its answer gives each query's exact 100th distance.
    log("  binary flat: build")
    bflat, bflat_build_s = build(BinaryFlatIndex, bits)
    bflat_bytes = file_bytes(bflat)
    rows.append(measure(
        "binary flat (exact Hamming, 64-bit)", bflat_build_s, bflat_bytes, n,
        lambda i: bflat.search(qb[i:i + 1], K),
        lambda i: bflat.index_.search(qb[i:i + 1], K),
        lambda: bflat.index_.search(qb, K)[1], nq, args))
    hamming_truth = rows[-1]["positions"]
    threshold = hamming(qb, bits, hamming_truth).max(axis=1)
    rows[-1]["recall"] = recall_hamming(hamming_truth, qb, bits, threshold)
    rows[-1]["recall_vs"] = "exact Hamming"
    hamming_vs_float = recall_float(hamming_truth, float_truth)

    # 3. binary IVF, built once, searched at several nprobe.
    log("  binary IVF: build (train + add)")
    ivf, ivf_build_s = build(lambda: BinaryIVFIndex(nlist=args.nlist), bits)
    ivf_bytes, nlist = file_bytes(ivf), int(ivf.index_.nlist)
    for nprobe in args.nprobes:
        ivf.nprobe = ivf.index_.nprobe = min(nprobe, nlist)
        rows.append(measure(
            f"binary IVF nlist={nlist} nprobe={nprobe}", ivf_build_s, ivf_bytes, n,
            lambda i: ivf.search(qb[i:i + 1], K),
            lambda i: ivf.index_.search(qb[i:i + 1], K),
            lambda: ivf.index_.search(qb, K)[1], nq, args))
        rows[-1]["recall"] = recall_hamming(rows[-1]["positions"], qb, bits, threshold)
        rows[-1]["recall_vs"], rows[-1]["nprobe"] = "exact Hamming", nprobe
    del ivf

    # 4. two-stage: exact Hamming top-M, re-ranked by the float codes.
    for m in args.shortlists:
        rows.append(measure(
            f"two-stage: Hamming top-{m} -> float re-rank", bflat_build_s, bflat_bytes + flat_bytes, n,
            lambda i: rerank(floats, qf[i], bflat.search(qb[i:i + 1], m)[1][0]),
            lambda i: rerank(floats, qf[i], bflat.index_.search(qb[i:i + 1], m)[1][0]),
            lambda: rerank_batch(floats, qf, bflat.index_.search(qb, m)[1]), nq, args))
        rows[-1]["recall"] = recall_float(rows[-1]["positions"], float_truth)
        rows[-1]["recall_vs"], rows[-1]["shortlist"] = "exact float", m

    for row in rows:
        del row["positions"]
    return {"n": n, "hamming_top100_vs_float_top100": hamming_vs_float,
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0], "methods": rows}


# ---------------------------------------------------------------- output


COLUMNS = ("method", "build s", "bytes/item", "p50 1 core ms", "p99 1 core ms",
           "p50 all cores ms", "p99 all cores ms", "batch q/s", "recall@100")


def table(result: dict) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in result["methods"]:
        cells = (r["method"], f"{r['build_s']:.2f}", f"{r['bytes_per_item']:.1f}",
                 f"{r['p50_1core_ms']:.3f}", f"{r['p99_1core_ms']:.3f}",
                 f"{r['p50_all_ms']:.3f}", f"{r['p99_all_ms']:.3f}",
                 f"{r['batch_qps']:,.0f}", f"{r['recall']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(result: dict, n_queries: int) -> str:
    methods = result["methods"]
    out = ["recall@100: float flat and two-stage against exact float search; binary rows against "
           "the exact Hamming scan, tie-aware. Exact Hamming top-100 vs exact float top-100 "
           f"(set overlap): {result['hamming_top100_vs_float_top100']:.3f}. Binary IVF rows share "
           "one build; two-stage build is the binary flat index's (bytes: binary + float files)."]
    out.append(f"Load average (1 min) before / after: {result['load_average_before']:.2f} / "
               f"{result['load_average_after']:.2f} on {ALL_CORES} cores.")
    short = [f"{r['method']} ({r['timed_1core']} / {r['timed_all']})" for r in methods
             if min(r["timed_1core"], r["timed_all"]) < n_queries]
    if short:
        out.append("Single queries timed (1 core / all cores) where fewer than " f"{n_queries}: " + "; ".join(short) + ".")
    good = [r for r in methods if "nprobe" in r and r["recall"] >= 0.9]
    if good:
        best = min(good, key=lambda r: r["p50_1core_ms"])
        out.append(f"Fastest binary IVF setting with recall@100 >= 0.9: nprobe={best['nprobe']} "
                   f"(recall {best['recall']:.3f}, p50 {best['p50_1core_ms']:.3f} ms on 1 core).")
    else:
        out.append("No binary IVF setting measured reaches recall@100 >= 0.9.")
    return "\n\n".join(out)


def int_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int_list, default=int_list("1000000,10000000"),
                        help="comma-separated numbers of items (default 1000000,10000000)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per size (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.5, help="item noise around its cluster centre (default 0.5)")
    parser.add_argument("--nprobes", type=int_list, default=int_list("1,2,4,8,16,32,64,128"))
    parser.add_argument("--nlist", type=int, default=None, help="binary IVF cells (default: the library's)")
    parser.add_argument("--shortlists", type=int_list, default=int_list("1000,200"), help="two-stage M values")
    parser.add_argument("--latency-budget", type=float, default=20.0,
                        help="seconds after which a single-query loop may stop (default 20)")
    parser.add_argument("--min-timed", type=int, default=200,
                        help="single queries timed at least, budget or not (default 200)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the raw figures here")
    args = parser.parse_args(argv)
    if args.queries < 1 or any(n <= K for n in args.sizes) or any(m < K for m in args.shortlists):
        parser.error(f"need --queries >= 1, sizes > {K} and shortlists >= {K}")

    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"Command: `{command}`  \n"
              f"os.cpu_count() = {ALL_CORES}; faiss {faiss.__version__}, numpy {np.__version__}; "
              f"k = {K}, {args.queries} queries, seed {args.seed}, noise {args.noise}")
    print(header, flush=True)
    results = []
    for n in args.sizes:
        result = run_size(n, args)
        results.append(result)
        print(f"\n### {n:,} items\n\n{table(result)}\n\n{notes(result, args.queries)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "cpu_count": ALL_CORES, "faiss": faiss.__version__, "numpy": np.__version__,
            "k": K, "queries": args.queries, "seed": args.seed, "noise": args.noise,
            "sizes": results}, indent=1))


if __name__ == "__main__":
    main()
