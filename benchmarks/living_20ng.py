"""Issue 5 on 20 Newsgroups bydate-clean: incremental add vs full rebuild, and outliers.

Usage: python benchmarks/living_20ng.py [path/to/20news-bydate.tar.gz] [--bits B]

1. Build an index of the training postings minus 1,000 held out (seeded),
   add the 1,000 with ``add`` (stored models, no retraining), and compare with
   a full build of all training postings: time of the add against the full
   build, and precision@100 of the test queries for every method.
2. 100 junk documents (50 in no known language: pseudo-words and Latin; 50
   binary junk printed as text: base64 and hex dumps of random bytes), mixed
   in two ways: (a) added with ``add`` to the index of all training postings
   (the models never saw them), (b) indexed with the training postings from
   the start (the models learn them too). For each, how many junk documents
   ``outliers -k 100`` ranks in its top 100.
Prints JSON and a Markdown summary.
"""
import argparse
import base64
import json
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from retrieval import DocsConfig, Store, build_docs_index
from retrieval.api import add_items, outliers, remove_items
from retrieval.evaluate import evaluate_index, load_queries
from retrieval.search import Retriever

warnings.simplefilter("ignore")


def extract(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def junk_documents(folder: Path, n: int = 100, seed: int = 0) -> None:
    """Write n junk documents: a quarter each of pseudo-words, Latin, base64, hex."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    latin = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed eiusmod tempor incididunt labore "
             "dolore magna aliqua enim minim veniam quis nostrud exercitation ullamco laboris nisi aliquip "
             "commodo consequat duis aute irure reprehenderit voluptate velit esse cillum fugiat nulla "
             "pariatur excepteur sint occaecat cupidatat proident sunt culpa officia deserunt mollit anim "
             "gallia omnis divisa partes tres quarum unam incolunt belgae aliam aquitani tertiam").split()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            words = ["".join(rng.choice(syllables, rng.integers(2, 5))) for _ in range(rng.integers(80, 300))]
            text = " ".join(words)
        elif kind == 1:
            text = " ".join(rng.choice(latin, rng.integers(80, 300)))
        elif kind == 2:
            raw = rng.integers(0, 256, int(rng.integers(600, 3000)), dtype=np.uint8).tobytes()
            text = "\n".join(base64.b64encode(raw).decode()[j:j + 76] for j in range(0, len(raw) * 4 // 3, 76))
        else:
            raw = rng.integers(0, 256, int(rng.integers(300, 1500)), dtype=np.uint8).tobytes()
            text = "\n".join(raw[j:j + 16].hex(" ") for j in range(0, len(raw), 16))
        (folder / f"junk{i:03d}").write_text(text + "\n")


def _added_rows(store: Store, name: str, extra: Path) -> list[dict]:
    """Rows of the index whose id is a file of ``extra``."""
    ids = {p.relative_to(extra).as_posix() for p in extra.rglob("*") if p.is_file()}
    retriever = Retriever(name, store)
    try:
        return [row for row in retriever.metadata.rows(range(len(retriever.metadata))) if row["id"] in ids]
    finally:
        retriever.close()


def evaluate(store: Store, name: str, queries_dir: Path) -> dict:
    retriever = Retriever(name, store)
    q = load_queries(retriever, queries_dir, labels_from_folders=True, strip="email")
    report = evaluate_index(retriever, q, k=100, latency_samples=50)
    return {m: round(r["precision@100"], 4) for m, r in report["methods"].items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("archive", nargs="?", default="../shared/data/20news-bydate.tar.gz")
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="full builds timed (adds: 2 * repeats - 1)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="living-"))
    data = extract(Path(args.archive), work / "data")
    train, test = data / "20news-bydate-train", data / "20news-bydate-test"
    store = Store(work / "home")
    config = DocsConfig(labels_from_folders=True, strip="email", bits=args.bits)
    out = {"command": " ".join(sys.argv), "held_out": args.held_out}

    # 1. incremental add against a full rebuild
    files = sorted(p for p in train.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    held = set(rng.choice(len(files), args.held_out, replace=False).tolist())
    base, extra = work / "base", work / "extra"
    for i, path in enumerate(files):
        target = (extra if i in held else base) / path.relative_to(train)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    builds = []
    for _ in range(args.repeats):  # the machine is noisy: medians of repeated runs
        started = time.perf_counter()
        build_docs_index(train, "full", config, store=store, force=True)
        builds.append(time.perf_counter() - started)
    out["full_build_seconds_runs"] = [round(t, 2) for t in builds]
    out["full_build_seconds"] = round(float(np.median(builds)), 2)
    build_docs_index(base, "incremental", config, store=store)
    adds, added_ids = [], []
    for _ in range(2 * args.repeats - 1):
        if added_ids:  # take the postings out again (the models stay), then time the add once more
            remove_items(store, "incremental", ids=added_ids)
        started = time.perf_counter()
        report = add_items(store, "incremental", extra)
        adds.append(time.perf_counter() - started)
        added_ids = [row["id"] for row in _added_rows(store, "incremental", extra)]
    out["add_seconds_runs"] = [round(t, 3) for t in adds]
    out["add_seconds"] = round(float(np.median(adds)), 3)
    out["add_report"] = report.to_dict()
    out["add_fraction_of_full_build"] = round(out["add_seconds"] / out["full_build_seconds"], 4)
    out["precision@100_full"] = evaluate(store, "full", test)
    out["precision@100_incremental"] = evaluate(store, "incremental", test)
    out["precision@100_difference"] = {m: round(out["precision@100_incremental"][m] - v, 4)
                                       for m, v in out["precision@100_full"].items()}

    # 2. outliers among 100 junk documents: (a) added after training, (b) trained on
    junk_documents(work / "junk-only" / "junk")
    add_items(store, "full", work / "junk-only")
    mixed = work / "mixed"
    shutil.copytree(train, mixed)
    junk_documents(mixed / "junk")
    build_docs_index(mixed, "mixed", config, store=store)
    kinds = ["pseudo-words", "latin", "base64", "hex"]
    for case, name in (("added", "full"), ("trained", "mixed")):
        top = outliers(store, name, k=100)
        out[f"junk_in_top_100_{case}"] = sum(r["id"].startswith("junk/") for r in top)
        out[f"junk_in_top_100_{case}_by_kind"] = {
            kinds[k]: sum(r["id"].startswith("junk/") and int(r["id"][-3:]) % 4 == k for r in top) for k in range(4)}
        out[f"top_100_not_junk_{case}"] = [r["id"] for r in top if not r["id"].startswith("junk/")]
    print(json.dumps(out, indent=2))
    print(f"\n| measure | value | target |\n|---|---|---|\n"
          f"| full build, {len(files)} postings (median of {args.repeats}) | {out['full_build_seconds']} s | |\n"
          f"| add {args.held_out} postings (median of {2 * args.repeats - 1}) | {out['add_seconds']} s "
          f"({100 * out['add_fraction_of_full_build']:.1f} % of the full build) | <= 5 % |\n"
          + "".join(f"| precision@100 {m}: incremental vs full | {out['precision@100_incremental'][m]:.3f} vs "
                    f"{v:.3f} ({out['precision@100_difference'][m]:+.3f}) | within 0.01 |\n"
                    for m, v in out["precision@100_full"].items())
          + f"| junk in outliers top 100, junk added after training | {out['junk_in_top_100_added']} of 100 "
            f"{out['junk_in_top_100_added_by_kind']} | >= 90 |\n"
          + f"| junk in outliers top 100, junk indexed with the corpus | {out['junk_in_top_100_trained']} of 100 "
            f"{out['junk_in_top_100_trained_by_kind']} | >= 90 |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
