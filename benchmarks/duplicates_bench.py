"""Near-duplicate finding on planted copies: ``retrieval duplicates`` against imagehash's pHash, same run.

Writes (or reuses) the planted sets of ``planted_duplicates.py`` (a
validation and a test split of each half, Fashion-MNIST and photo tiles),
builds one image index per half and split (``--fit crop``; ``--epochs``),
then for every split:

* ours: candidate pairs from each item's ``--candidates`` nearest stored
  codes and signatures, verified by the aligned signature
  (``DuplicateFinder``), decided by the floor + ratio test of
  ``duplicate_mask``;
* pHash: ``imagehash.phash`` (64 bits) of every file as written, every pair
  within a Hamming distance (FAISS binary range search, all pairs).

The settings of both are chosen on the validation split (best F1 over
both halves together: pHash's Hamming distance; our floor, ratio and
"certain" score, the reference rank fixed at ``DUPLICATES_REFERENCE_RANK``;
also our best single threshold without the ratio test, for comparison) and
applied to the test split; precision and recall count pairs against the
planted (original, copy) pairs. ``--validation-only`` stops after the
choice (the test split is not read). Last, ``--check`` of one file: p50
over repeated in-process calls on the test Fashion index (run with
OPENBLAS_NUM_THREADS=1).

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


def ours(home: Path, name: str, candidates: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(ids in position order, candidate pairs, their scores, their reference scores, timings)``."""
    from retrieval import Store
    from retrieval.config import DUPLICATES_REFERENCE_RANK
    from retrieval.search import Retriever
    from retrieval.search.duplicates import DuplicateFinder, reference_scores

    retriever = Retriever(name, Store(home))
    finder = DuplicateFinder(retriever)
    ids = retriever.metadata.ids()
    t0 = time.perf_counter()
    pairs = finder.candidate_pairs(candidates)
    t1 = time.perf_counter()
    scores = finder.verify(pairs)
    t2 = time.perf_counter()
    ref = reference_scores(len(ids), pairs, scores, DUPLICATES_REFERENCE_RANK)
    reference = np.minimum(ref[pairs[:, 0]], ref[pairs[:, 1]]) if len(pairs) else np.zeros(0, np.float32)
    return ids, pairs, scores, reference, {"candidates_s": t1 - t0, "verify_s": t2 - t1,
                                           "candidate_pairs": len(pairs)}


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


FLOORS = tuple(np.round(np.arange(0.80, 0.995, 0.01), 2))
RATIOS = tuple(np.round(np.arange(0.05, 0.601, 0.025), 3))
CERTAIN = (0.998, 0.9985, 0.999, 0.9995, 1.0)


def ours_found(run: dict, rule: dict) -> np.ndarray:
    """The pairs of one run that ``rule`` (floor, ratio, certain; ratio 0: the floor alone) calls duplicates."""
    from retrieval.search.duplicates import duplicate_mask

    return run["pairs"][duplicate_mask(run["scores"], run["reference"], rule["threshold"], rule["ratio"],
                                       rule["certain"])]


def best_rule(runs: list) -> tuple[dict, float]:
    """The floor, ratio and certain score of best F1 over every run together (the validation splits)."""
    from retrieval.search.duplicates import duplicate_mask

    hits = [np.array([(int(a), int(b)) in r["truth"] for a, b in r["pairs"]], bool) for r in runs]
    n_truth = sum(len(r["truth"]) for r in runs)
    best = ({}, -1.0)
    for certain in CERTAIN:
        for floor in FLOORS:
            for ratio in RATIOS:
                rule = {"threshold": float(floor), "ratio": float(ratio), "certain": float(certain)}
                tp = found = 0
                for r, hit in zip(runs, hits):
                    keep = duplicate_mask(r["scores"], r["reference"], floor, ratio, certain)
                    tp += int((keep & hit).sum())
                    found += int(keep.sum())
                f1 = 2 * tp / (found + n_truth)
                if f1 > best[1] + 1e-9:
                    best = (rule, f1)
    return best


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
    parser.add_argument("--validation-only", action="store_true",
                        help="choose the settings on the validation splits and stop (the test split is not read)")
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
    splits = ("val",) if args.validation_only else ("val", "test")
    for split in splits:
        for half in halves:
            name = f"{half}-{split}"
            seconds = build(args.home, args.data, half, split, args.epochs, args.reuse)
            ids, pairs, scores, reference, timing = ours(args.home, name, candidates)
            truth, planted, pos = truth_of(args.data, name, ids)
            ph_pairs, ph_dist, ph_s = phash_pairs(args.data / name, ids)
            found = {(int(a), int(b)) for a, b in pairs}
            runs[name] = {"half": half, "split": split, "items": len(ids), "truth": truth, "planted": planted,
                          "pos": pos, "pairs": pairs, "scores": scores, "reference": reference, "phash_pairs": ph_pairs,
                          "phash_dist": ph_dist, "candidate_recall": len(found & truth) / len(truth),
                          "build_s": seconds, "phash_s": ph_s, **timing}
            print(f"{name}: {len(ids)} items, {len(truth)} planted pairs; candidate recall "
                  f"{runs[name]['candidate_recall']:.3f} ({timing['candidate_pairs']} pairs, "
                  f"{timing['candidates_s']:.1f} s + verify {timing['verify_s']:.1f} s); pHash {ph_s:.1f} s; "
                  f"build {seconds:.0f} s", flush=True)
    val = [r for r in runs.values() if r["split"] == "val"]
    rule, f1 = best_rule(val)
    t_one = best_threshold(val, higher=True)
    t_ph = best_threshold([{"pairs": r["phash_pairs"], "scores": r["phash_dist"], "truth": r["truth"]} for r in val],
                          higher=False)
    print(f"\nchosen on val (best F1 of both halves): ours floor {rule['threshold']}, ratio {rule['ratio']}, certain "
          f"{rule['certain']} (F1 {f1:.4f}); ours with one threshold (no ratio test) {t_one:.4f}; "
          f"pHash Hamming <= {t_ph:.0f}")
    rows = []
    one = {"threshold": t_one, "ratio": 0.0, "certain": 1.0}
    for split in splits:
        tot = {"ours": [0, 0, 0], "ours-one-threshold": [0, 0, 0], "phash": [0, 0, 0]}
        for half in halves:
            r = runs[f"{half}-{split}"]
            theirs = r["phash_pairs"][r["phash_dist"] <= t_ph]
            for label, found in (("ours", ours_found(r, rule)), ("ours-one-threshold", ours_found(r, one)),
                                 ("phash", theirs)):
                p, rec, n = pr(found, r["truth"])
                tot[label][0] += round(p * n)
                tot[label][1] += n
                tot[label][2] += round(rec * len(r["truth"]))
                row = {"split": split, "half": half, "method": label, "precision": round(p, 3),
                       "recall": round(rec, 3), "found_pairs": n, "per_transform": per_transform(found, r["planted"],
                                                                                                 r["pos"])}
                rows.append(row)
                print(f"{split:4s} {half:7s} {label:18s} P {p:.3f} R {rec:.3f} ({n} pairs) {row['per_transform']}")
        n_truth = sum(len(runs[f"{h}-{split}"]["truth"]) for h in halves)
        for label, (tp, n, hit) in tot.items():
            p, rec = (tp / n if n else 1.0), hit / n_truth
            rows.append({"split": split, "half": "both", "method": label, "precision": round(p, 3),
                         "recall": round(rec, 3), "found_pairs": n})
            print(f"{split:4s} both    {label:18s} P {p:.3f} R {rec:.3f} ({n} pairs)")
    if args.validation_only:
        return

    # --check: one new file against the test Fashion index, in process, repeated
    from retrieval import Store
    from retrieval.search import Retriever
    from retrieval.search.duplicates import DuplicateFinder

    name = f"{halves[0]}-test"
    finder = DuplicateFinder(Retriever(name, Store(args.home)))
    planted = runs[name]["planted"]
    files = [args.data / name / p["copy"] for p in planted][:args.checks]
    t0 = time.perf_counter()
    settings = {"threshold": rule["threshold"], "candidates": candidates, "ratio": rule["ratio"],
                "certain": rule["certain"]}
    first = finder.check(str(files[0]), **settings)
    first_s = time.perf_counter() - t0
    times, hits = [], 0
    for p, f in zip(planted, files):
        t0 = time.perf_counter()
        result = finder.check(str(f), **settings)
        times.append(time.perf_counter() - t0)
        hits += p["original"] in {m.id for m in result.matches}
    times_ms = 1000 * np.array(times)
    print(f"\n--check of one file ({name}, {len(times)} calls after a first of {1000 * first_s:.0f} ms): "
          f"p50 {np.median(times_ms):.1f} ms, p90 {np.quantile(times_ms, 0.9):.1f} ms; the copy's original found "
          f"in {hits}/{len(times)}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
          f"load average {os.getloadavg()}")
    del first
    if args.json:
        args.json.write_text(json.dumps({"thresholds": {"ours": rule, "ours_val_f1": f1, "ours_one": t_one,
                                                        "phash": t_ph}, "rows": rows,
                                         "check_ms": {"p50": float(np.median(times_ms)),
                                                      "p90": float(np.quantile(times_ms, 0.9)),
                                                      "first": 1000 * first_s},
                                         "runs": {k: {x: v[x] for x in ("items", "candidate_recall", "build_s",
                                                                         "candidates_s", "verify_s", "phash_s",
                                                                         "candidate_pairs")}
                                                  for k, v in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
