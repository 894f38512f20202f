"""Start-up cost of the command line: ``--help``, one query, ``add`` of 1,000 documents (issue 10).

Each figure is the median of ``--runs`` fresh processes timed by ``/usr/bin/time -v``
(wall time and peak RSS), after one unmeasured run that warms the page cache.
``add`` runs on a fresh copy of the index each time (copying is not timed).

Usage::

    python benchmarks/query_startup.py --home /path/to/indexes --name 20ng-32 \\
        [--python /path/to/python] [--code /path/to/checkout] [--add-docs /tmp/ng/20news-bydate-test]

``--python``/``--code`` select the interpreter and the checkout timed (default:
this interpreter and this checkout), so an older checkout can be timed beside.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

QUERY = "graphics card driver for windows"


def timed(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one run of ``cmd``."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", out.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, int(rss.group(1)) / 1024


def median_of(runs: int, cmd: list[str], cwd: Path, env: dict, before=None) -> dict:
    if before:
        before()
    timed(cmd, cwd, env)  # warm the page cache
    samples = []
    for _ in range(runs):
        if before:
            before()
        samples.append(timed(cmd, cwd, env))
    return {"wall_s": round(statistics.median(s[0] for s in samples), 3),
            "peak_rss_mb": round(statistics.median(s[1] for s in samples), 1),
            "runs": [round(s[0], 3) for s in samples]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="RETRIEVAL_HOME holding the index (read only).")
    parser.add_argument("--name", default="20ng-32")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--add-docs", type=Path, default=Path("/tmp/ng/20news-bydate-test"),
                        help="Folder of newsgroup folders: the first 1,000 files are added (0 files: skipped).")
    parser.add_argument("--add-count", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "RETRIEVAL_HOME": str(args.home), "PYTHONPATH": str(args.code)}
    cli = [args.python, "-m", "retrieval"]
    report = {
        "code": str(args.code),
        "help": median_of(args.runs, [*cli, "--help"], args.code, env),
        "query": median_of(args.runs, [*cli, "query", args.name, QUERY], args.code, env),
    }
    files = sorted(args.add_docs.glob("*/*"))[:args.add_count] if args.add_docs.is_dir() else []
    if files:
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            for f in files:
                (docs / f.parent.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, docs / f.parent.name / f.name)
            home = Path(tmp) / "home"

            def fresh_copy() -> None:  # add writes: every run starts from the same index
                shutil.rmtree(home, ignore_errors=True)
                shutil.copytree(args.home / args.name, home / args.name, symlinks=True)

            add_env = {**env, "RETRIEVAL_HOME": str(home)}
            report["add"] = median_of(args.runs, [*cli, "add", args.name, str(docs), "--labels-from-folders"],
                                  args.code, add_env, before=fresh_copy)
            report["add"]["documents"] = len(files)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
