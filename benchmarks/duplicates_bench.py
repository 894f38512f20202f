"""Near-duplicate finding on planted copies: ``retrieval duplicates`` against imagehash's pHash, same run.

Writes (or reuses) the planted sets of ``planted_duplicates.py`` (a
validation and a test split of each half, Fashion-MNIST and photo tiles),
builds one image index per half and split (``--fit crop``; ``--epochs``),
then for every split:

* ours: candidate pairs from each item's ``--candidates`` nearest stored
  codes, verified by the aligned signature (``DuplicateFinder``);
* pHash: ``imagehash.phash`` (64 bits) of every file as written, every pair
  within a Hamming distance (FAISS binary range search, all pairs).

The thresholds of both are chosen on the validation split (best F1 over
both halves together) and applied to the test split; precision and recall
count pairs against the planted (original, copy) pairs. Last, ``--check``
of one file: p50 over repeated in-process calls on the test Fashion index
(run with OPENBLAS_NUM_THREADS=1).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/duplicates_bench.py --data /tmp/dups-data \\
        --home /tmp/dups-idx
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

HALVES = {"fashion": 28, "photo": 32}  # stored side: Fashion-MNIST's own, the default for folders


def build(home: Path, data: Path, half: str, split: str, epochs: int, reuse: bool) -> float:
    from retrieval import Index, Store

    name = f"{half}-{split}"
    if reuse and (home / name / "manifest.json").exists():
        return 0.0
    started = time.perf_counter()
    Index.build_images(data / name, name=name, store=Store(home), force=True, size=HALVES[half], fit="crop",
                       epochs=epochs, baselines=[])
    return time.perf_counter() - started


def truth_of(data: Path, name: str, ids: list[str]) -> tuple[set, list[dict], dict]:
    pairs = json.loads((data / f"{name}.pairs.json").read_text())
    pos = {i: p for p, i in enumerate(ids)}
    return {tuple(sorted((pos[p["original"]], pos[p["copy"]]))) for p in pairs}, pairs, pos


def ours(home: Path, name: str, candidates: int) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """``(ids in position order, candidate pairs, their scores, timings)``."""
    from retrieval import Store
    from retrieval.search import Retriever
    from retrieval.search.duplicates import DuplicateFinder

    retriever = Retriever(name, Store(home))
    finder = DuplicateFinder(retriever)
    ids = retriever.metadata.ids()
    t0 = time.perf_counter()
    pairs = finder.candidate_pairs(candidates)
    t1 = time.perf_counter()
    scores = finder.verify(pairs)
    t2 = time.perf_counter()
    return ids, pairs, scores, {"candidates_s": t1 - t0, "verify_s": t2 - t1, "candidate_pairs": len(pairs)}


def phash_pairs(folder: Path, ids: list[str], max_distance: int = 24) -> tuple[np.ndarray, np.ndarray, float]:
    """Every pair within ``max_distance`` bits of pHash: ``(pairs, distances, seconds)``."""
    import faiss
    import imagehash
    from PIL import Image

    started = time.perf_counter()
    bits = np.array([imagehash.phash(Image.open(folder / i)).hash.reshape(-1) for i in ids])
    codes = np.packbits(bits, axis=1)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, dist, cols = index.range_search(codes, max_distance + 1)
    rows = np.repeat(np.arange(len(ids)), np.diff(lims).astype(np.int64))
    keep = rows < cols
    return np.stack([rows[keep], cols[keep]], 1), dist[keep], time.perf_counter() - started


def pr(pairs: np.ndarray, truth: set) -> tuple[float, float, int]:
    found = {(int(a), int(b)) for a, b in pairs}
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), tp / len(truth), len(found)


def per_transform(pairs: np.ndarray, planted: list[dict], pos: dict) -> dict:
    found = {(int(a), int(b)) for a, b in pairs}
    out: dict = {}
    for p in planted:
        key = tuple(sorted((pos[p["original"]], pos[p["copy"]])))
        out.setdefault(p["transform"], []).append(key in found)
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


def best_threshold(runs: list, higher: bool) -> float:
    """The threshold of best F1 over every run together (the validation split of both halves)."""
    scores = np.concatenate([r["scores"] for r in runs]).astype(np.float64)
    hit = np.concatenate([[(int(a), int(b)) in r["truth"] for a, b in r["pairs"]] for r in runs]).astype(float)
    n_truth = sum(len(r["truth"]) for r in runs)
    key = -scores if higher else scores
    order = np.argsort(key, kind="stable")
    tp, found = np.cumsum(hit[order]), np.arange(1, len(order) + 1)
    last = np.r_[key[order][1:] != key[order][:-1], True]  # a cut falls between distinct values only
    f1 = np.where(last, 2 * tp / (found + n_truth), -1)
    return float(scores[order][int(np.argmax(f1))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/dups-data"))
    parser.add_argument("--home", type=Path, default=Path("/tmp/dups-idx"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=None, help="default: DUPLICATES_CANDIDATES")
    parser.add_argument("--reuse", action="store_true", help="keep indexes already built in --home")
    parser.add_argument("--checks", type=int, default=200, help="--check calls timed")
    parser.add_argument("--halves", default="fashion,photo", help="comma-separated: fashion, photo")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from retrieval.config import DUPLICATES_CANDIDATES
    import planted_duplicates

    candidates = args.candidates or DUPLICATES_CANDIDATES
    halves = [h for h in HALVES if h in args.halves.split(",")]
    if not (args.data / "fashion-test.pairs.json").exists():
        planted_duplicates.make(args.data, fashion_items={"val": (5000, 500), "test": (10000, 1000)},
                                photo_items={"val": (760, 380), "test": (1600, 1000)})
    print(f"load average at start: {os.getloadavg()}", flush=True)
    runs = {}
    for split in ("val", "test"):
        for half in halves:
            name = f"{half}-{split}"
            seconds = build(args.home, args.data, half, split, args.epochs, args.reuse)
            ids, pairs, scores, timing = ours(args.home, name, candidates)
            truth, planted, pos = truth_of(args.data, name, ids)
            ph_pairs, ph_dist, ph_s = phash_pairs(args.data / name, ids)
            found = {(int(a), int(b)) for a, b in pairs}
            runs[name] = {"half": half, "split": split, "items": len(ids), "truth": truth, "planted": planted,
                          "pos": pos, "pairs": pairs, "scores": scores, "phash_pairs": ph_pairs,
                          "phash_dist": ph_dist, "candidate_recall": len(found & truth) / len(truth),
                          "build_s": seconds, "phash_s": ph_s, **timing}
            print(f"{name}: {len(ids)} items, {len(truth)} planted pairs; candidate recall "
                  f"{runs[name]['candidate_recall']:.3f} ({timing['candidate_pairs']} pairs, "
                  f"{timing['candidates_s']:.1f} s + verify {timing['verify_s']:.1f} s); pHash {ph_s:.1f} s; "
                  f"build {seconds:.0f} s", flush=True)
    val = [r for r in runs.values() if r["split"] == "val"]
    t_ours = best_threshold(val, higher=True)
    t_ph = best_threshold([{"pairs": r["phash_pairs"], "scores": r["phash_dist"], "truth": r["truth"]} for r in val],
                          higher=False)
    print(f"\nthresholds chosen on val (best F1 of both halves): ours {t_ours:.4f}, pHash Hamming <= {t_ph:.0f}")
    rows = []
    for split in ("val", "test"):
        tot = {"ours": [0, 0, 0], "phash": [0, 0, 0]}
        for half in halves:
            r = runs[f"{half}-{split}"]
            mine = r["pairs"][r["scores"] >= t_ours]
            theirs = r["phash_pairs"][r["phash_dist"] <= t_ph]
            for label, found in (("ours", mine), ("phash", theirs)):
                p, rec, n = pr(found, r["truth"])
                tot[label][0] += round(p * n)
                tot[label][1] += n
                tot[label][2] += round(rec * len(r["truth"]))
                row = {"split": split, "half": half, "method": label, "precision": round(p, 3),
                       "recall": round(rec, 3), "found_pairs": n, "per_transform": per_transform(found, r["planted"],
                                                                                                 r["pos"])}
                rows.append(row)
                print(f"{split:4s} {half:7s} {label:5s} P {p:.3f} R {rec:.3f} ({n} pairs) {row['per_transform']}")
        n_truth = sum(len(runs[f"{h}-{split}"]["truth"]) for h in halves)
        for label, (tp, n, hit) in tot.items():
            p, rec = (tp / n if n else 1.0), hit / n_truth
            rows.append({"split": split, "half": "both", "method": label, "precision": round(p, 3),
                         "recall": round(rec, 3), "found_pairs": n})
            print(f"{split:4s} both    {label:5s} P {p:.3f} R {rec:.3f} ({n} pairs)")

    # --check: one new file against the test Fashion index, in process, repeated
    from retrieval import Store
    from retrieval.search import Retriever
    from retrieval.search.duplicates import DuplicateFinder

    name = f"{halves[0]}-test"
    finder = DuplicateFinder(Retriever(name, Store(args.home)))
    planted = runs[name]["planted"]
    files = [args.data / name / p["copy"] for p in planted][:args.checks]
    t0 = time.perf_counter()
    first = finder.check(str(files[0]), t_ours, candidates)
    first_s = time.perf_counter() - t0
    times, hits = [], 0
    for p, f in zip(planted, files):
        t0 = time.perf_counter()
        result = finder.check(str(f), t_ours, candidates)
        times.append(time.perf_counter() - t0)
        hits += p["original"] in {m.id for m in result.matches}
    times_ms = 1000 * np.array(times)
    print(f"\n--check of one file ({name}, {len(times)} calls after a first of {1000 * first_s:.0f} ms): "
          f"p50 {np.median(times_ms):.1f} ms, p90 {np.quantile(times_ms, 0.9):.1f} ms; the copy's original found "
          f"in {hits}/{len(times)}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
          f"load average {os.getloadavg()}")
    del first
    if args.json:
        args.json.write_text(json.dumps({"thresholds": {"ours": t_ours, "phash": t_ph}, "rows": rows,
                                         "check_ms": {"p50": float(np.median(times_ms)),
                                                      "p90": float(np.quantile(times_ms, 0.9)),
                                                      "first": 1000 * first_s},
                                         "runs": {k: {x: v[x] for x in ("items", "candidate_recall", "build_s",
                                                                         "candidates_s", "verify_s", "phash_s",
                                                                         "candidate_pairs")}
                                                  for k, v in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
