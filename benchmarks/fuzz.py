"""The long fuzz run of issue 12: many generated bad inputs at the readers and the CLI.

    python benchmarks/fuzz.py [--readers 3000] [--commands 600] [--seeds 0,1,2]

Prints, per seed, how many inputs each reader and command got and how they
ended (read / clear error; exit 0 / exit 1), and every failure: a traceback,
an exit code other than 0 or 1, an exit 1 without exactly one ``error:``
line, a warning that is not a RetrievalWarning, a hang, or an index that no
longer opens with its item count. Exit status 1 if anything failed. The
quick version of the same run is ``tests/test_fuzz.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import TINY_DOCS, TINY_IMAGES, synthetic_docs, synthetic_images, write_corpus  # noqa: E402
from fuzz_inputs import run_commands, run_readers  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=3000, help="generated sources per seed")
    parser.add_argument("--commands", type=int, default=600, help="generated commands per seed")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    args = parser.parse_args()

    from retrieval import Store, build_docs_index, build_images_index

    totals = {"inputs": 0, "failures": 0}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        store = Store(base / "home")
        write_corpus(base / "docs", synthetic_docs())
        build_docs_index(base / "docs", "docs", TINY_DOCS, store=store)
        synthetic_images(base / "images")
        build_images_index(base / "images", "images", TINY_IMAGES, store=store)
        for seed in (int(s) for s in args.seeds.split(",")):
            for label, run in (("readers", lambda: run_readers(seed, args.readers, base / f"r{seed}")),
                               ("commands", lambda: run_commands(seed, args.commands, base / f"c{seed}",
                                                                 base / "home", "docs", "images"))):
                start = time.perf_counter()
                outcomes, failures = run()
                n = args.readers if label == "readers" else args.commands
                totals["inputs"] += n
                totals["failures"] += len(failures)
                print(json.dumps({"seed": seed, "run": label, "inputs": n, "failures": len(failures),
                                  "seconds": round(time.perf_counter() - start, 1),
                                  "outcomes": dict(sorted(outcomes.items()))}), flush=True)
                for failure in failures:
                    print("  FAIL " + failure.splitlines()[0][:300], flush=True)
    print(json.dumps({"total": totals}))
    return 1 if totals["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
