"""Kill test (issues #5, #13): SIGKILL a write (build, add, remove, sync, compact) of an index, then open it.

Run::

    /work/venv/bin/python benchmarks/kill_test.py --points 200 --seed 0

Two tiny document corpora of different sizes (120 and 80 items) and a folder
of 8 extra documents. Each point draws a write from ``--seed``: ``build``
(replace the index with the other corpus, ``force=True``), ``sync`` (mirror
the other corpus), ``add`` (the extra documents), ``remove`` (every item of
one topic) or ``compact`` (merge the segments: ``add``, ``remove`` and
``sync`` write segments and deletion marks), whose state after differs from
before: the item count, or for ``compact`` the number of segments, tells
the old state from the new one. Each kind of write runs once to the end first;
its duration ``D`` sets the range of its kill moments, drawn uniformly in
``[0, D]``. After each kill the index is opened with
:class:`retrieval.search.Retriever` (recovery and checksum verification) and
queried; a kill is ``old`` or ``new`` by the item and segment counts,
``broken`` when the open or the query fails or the counts are neither (must
stay 0).

Before the open, the home folder shows where the kill landed: ``build`` (a
``.tmp-`` folder left: killed while writing), ``between renames`` (no index
folder, an ``.old-`` one: the swap's window that recovery exists for),
``after swap`` (index and ``.old-`` folder: killed before the cleanup),
``segment`` (segment data the manifest does not list: a segment write killed
before its commit, or segments a committed compaction replaced) or ``none``
(nothing left: the write had finished, or not begun writing). Then the lock
is taken once, as the next writer would, and the home folder must hold
nothing but the index, the index nothing its manifest does not list
(leftovers of the killed write are deleted).

Speed: a helper process imports the library and Keras once and forks one
build per point, so a point costs a tiny build (~1 s), not a TensorFlow import
too. ``--widen S`` makes each build sleep S seconds after each rename of the
swap, so more kills land in the windows that matter (0: real timing).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "victim"
QUERY = "orbit rocket launch satellite"


def _config():
    from retrieval.config import DocsConfig

    # The test suite's TINY_DOCS: these builds check crash safety, not quality.
    return DocsConfig(labels_from_folders=True, code_dim=4, hidden=(16,), epochs=3, batch_size=32,
                      neighbours=3, baseline_dim=4)


def write_docs(root: Path, n_per_topic: int, seed: int) -> int:
    """Write a labelled synthetic corpus (four topics); returns the item count."""
    import numpy as np

    topics = {"space": "orbit rocket launch nasa satellite moon planet shuttle",
              "cars": "engine wheel brake tire dealer sedan horsepower clutch",
              "medicine": "doctor patient disease symptom treatment drug clinic vaccine",
              "computers": "keyboard monitor software driver memory disk processor printer"}
    rng = np.random.default_rng(seed)
    count = 0
    for label, words in topics.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_topic):
            text = " ".join(rng.choice(words.split(), size=30))
            (root / label / f"d{i:03d}.txt").write_text(f"{label} {i}\n{text}\n")
            count += 1
    return count


class Helper:
    """A process that forks builds of ``NAME`` into ``home`` and kills them on request.

    Args:
        home: The store's root folder.
        widen: Seconds each build sleeps after each rename of its swap.
        log: File receiving the helper's and the builds' stderr.
    """

    def __init__(self, home: Path, widen: float = 0.0, log: Path | None = None) -> None:
        self._log = open(log or os.devnull, "ab")
        # The helper imports the retrieval of this checkout (not whichever one is installed).
        checkout = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, __file__, "--helper", str(home), "--widen", str(widen)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=env)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"kill-test helper failed to start (got {line!r}); see {log}")

    def build(self, corpus: Path, delay: float | None, op: str = "build", prefix: str = "") -> dict:
        """Run one write of ``NAME``; SIGKILL it ``delay`` s after the fork (None: let it finish).

        Args:
            corpus: The corpus of a ``build``/``sync``/``add``.
            delay: Seconds until the kill.
            op: ``build``, ``sync``, ``add`` or ``remove``.
            prefix: The path prefix a ``remove`` deletes.

        Returns:
            ``{"killed": bool, "seconds": float, "exit": int}``.
        """
        request = {"corpus": str(corpus), "delay": delay, "op": op, "prefix": prefix}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        """Stop the helper."""
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._log.close()


def _serve(home: Path, widen: float) -> None:
    """The helper's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    import traceback

    import keras  # noqa: F401  paid once here, not in every forked build
    from retrieval import Store, build_docs_index
    from retrieval.encoders import autoencoder  # noqa: F401
    from retrieval.writer import add_items, compact, remove_items, sync_items

    config = _config()
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.dup2(2, 1)  # keep stdout for the protocol
            code = 0
            try:
                if widen:
                    rename = os.rename

                    def slow_rename(src, dst, _rename=rename):
                        _rename(src, dst)
                        time.sleep(widen)

                    def slow_replace(src, dst, _replace=os.replace):  # a segment write's commit
                        _replace(src, dst)
                        time.sleep(widen)

                    os.rename, os.replace = slow_rename, slow_replace
                store, op = Store(home), request.get("op", "build")
                if op == "build":
                    build_docs_index(request["corpus"], NAME, config, store=store, force=True)
                elif op == "sync":
                    sync_items(store, NAME, request["corpus"], new_source=True)  # the other corpus
                elif op == "add":
                    add_items(store, NAME, request["corpus"])
                elif op == "compact":
                    compact(store, NAME)
                else:
                    remove_items(store, NAME, path_prefix=request["prefix"], allow_empty=True)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        delay, killed = request["delay"], False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            elapsed = time.perf_counter() - started
            if delay is not None and elapsed >= delay:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                killed = True
                break
            time.sleep(min(0.002, max(0.0, (delay or 1.0) - elapsed)))
        print(json.dumps({"killed": killed, "seconds": round(time.perf_counter() - started, 4),
                          "exit": os.waitstatus_to_exitcode(status)}), flush=True)


def where(home: Path) -> str:
    """Where a killed build left the home folder (see the module docstring)."""
    names = [p.name for p in home.iterdir()] if home.is_dir() else []
    old = any(n.startswith(f".old-{NAME}-") for n in names)
    if old and not (home / NAME / "manifest.json").exists():
        return "between renames"
    if old:
        return "after swap"
    if any(n.startswith(f".tmp-{NAME}-") for n in names):
        return "build"
    if _unlisted(home / NAME):
        return "segment"
    return "none"


def _unlisted(folder: Path) -> list[str]:
    """Files of an index its manifest does not list (the manifest itself aside)."""
    if not (folder / "manifest.json").exists():
        return []
    listed = set(json.loads((folder / "manifest.json").read_text()).get("files", {}))
    return sorted(rel for p in folder.rglob("*") if p.is_file()
                  and (rel := p.relative_to(folder).as_posix()) not in listed and rel != "manifest.json")


def check(store, counts) -> tuple[int, int]:
    """Open and query the index; return its item and segment counts (raises when broken).

    Args:
        store: The store.
        counts: The item counts a healthy index may have (before, after).
    """
    from retrieval.search import Retriever

    retriever = Retriever(NAME, store)
    try:
        hits = retriever.search(QUERY, k=3)
        if not hits:
            raise AssertionError("the query found nothing")
        n = len(retriever.metadata)
        if n != retriever.manifest["counts"]["items"] or n not in counts:
            raise AssertionError(f"{n} items, manifest says {retriever.manifest['counts']['items']}, "
                                 f"expected one of {counts}")
        if len(retriever.search(QUERY, k=n)) != n:
            raise AssertionError(f"a query for all {n} items found fewer")
        return n, len(retriever.manifest["segments"])
    finally:
        retriever.close()


def _ids(store) -> list[str]:
    from retrieval.search import Retriever

    retriever = Retriever(NAME, store, verify=False)
    try:
        return [row["id"] for row in retriever.metadata.rows(range(len(retriever.metadata)))]
    finally:
        retriever.close()


def _plan(op: str, ids: list[str], corpora, extra) -> tuple[Path, str, int]:
    """(corpus, prefix, item count after) of a write from the state ``ids``."""
    other = corpora[1] if len(ids) == corpora[0][1] else corpora[0]
    if op == "compact":
        return other[0], "", len(ids)
    if op in ("build", "sync"):
        return other[0], "", other[1]
    if op == "add":
        return extra[0], "", len(set(ids) | set(extra[1]))
    topics = sorted({i.split("/")[0] for i in ids})
    topic = topics[len(ids) % len(topics)]
    return other[0], topic + "/", sum(not i.startswith(topic + "/") for i in ids)


def kill_loop(home: Path, corpora: tuple[tuple[Path, int], tuple[Path, int]], points: int, seed: int,
              widen: float = 0.0, log: Path | None = None, echo=None, extra: Path | None = None,
              ops: tuple[str, ...] = ("build",)) -> dict:
    """Build once, then kill ``points`` writes and check the index after each.

    Args:
        home: The store's root (created).
        corpora: Two ``(folder, item count)`` pairs of different counts.
        points: Number of kills.
        seed: Seed of the writes and kill moments.
        widen: See :class:`Helper`.
        log: Where the builds' stderr goes.
        echo: Called with one line per point (progress), when given.
        extra: Folder of documents for ``add`` (ids not in the corpora).
        ops: The kinds of write drawn from: ``build``, ``sync``, ``add``, ``remove``, ``compact``.

    Returns:
        ``{"duration": {op: D}, "outcomes": {...}, "where": {...}, "by_op": {...}, "broken": [details]}``.
    """
    import warnings

    import numpy as np

    from retrieval import Store
    from retrieval.errors import RetrievalWarning

    store = Store(home)
    extra_ids = sorted(p.relative_to(extra).as_posix() for p in extra.rglob("*.txt")) if extra else []
    helper = Helper(home, widen, log)
    try:
        duration = {}
        first = helper.build(corpora[0][0], None)
        if first["exit"] != 0:
            raise RuntimeError(f"the unkilled build failed ({first}); see {log}")
        duration["build"] = first["seconds"]
        state = check(store, (corpora[0][1],))
        for op in ops:  # each kind of write once, unkilled: its duration bounds its kill moments
            if op in ("build", "compact"):
                continue
            corpus, prefix, after = _plan(op, _ids(store), corpora, (extra, extra_ids))
            timed = helper.build(corpus, None, op, prefix)
            if timed["exit"] != 0:
                raise RuntimeError(f"the unkilled {op} failed ({timed}); see {log}")
            duration[op] = timed["seconds"]
            state = check(store, (after,))
        if "compact" in ops and state[1] == 1:  # one more segment, so the timed compaction has work
            corpus, prefix, after = _plan("remove", _ids(store), corpora, (extra, extra_ids))
            helper.build(corpus, None, "remove", prefix)
            state = check(store, (after,))
        if "compact" in ops:
            timed = helper.build(corpora[0][0], None, "compact")
            duration["compact"] = timed["seconds"]
            state = check(store, (state[0],))
        rng = np.random.default_rng(seed)
        outcomes = {"old": 0, "new": 0, "broken": 0}
        by_op: dict[str, dict[str, int]] = {}
        places: dict[str, int] = {}
        broken = []
        for i in range(points):
            before = state
            ids = _ids(store)
            op = ops[int(rng.integers(len(ops)))]
            if op == "remove" and len({x.split("/")[0] for x in ids}) < 2:
                op = "build"  # never empty the index: the count would not tell states apart
            corpus, prefix, after = _plan(op, ids, corpora, (extra, extra_ids))
            counts = (before[0], after)
            delay = float(rng.uniform(0, duration[op]))
            result = helper.build(corpus, delay, op, prefix)
            place = where(home)
            places[place] = places.get(place, 0) + 1
            try:
                with warnings.catch_warnings():
                    # "restored the previous version", "took over the lock file": expected here
                    warnings.simplefilter("ignore", RetrievalWarning)
                    state = check(store, counts)
                    with store.lock(NAME):  # what the next writer does first: clean up
                        pass
                left = sorted(p.name for p in home.iterdir() if p.name != NAME) + _unlisted(home / NAME)
                if left:
                    raise AssertionError(f"leftovers not cleaned up: {left}")
                outcome = "old" if state == before else "new"
                if op == "compact" and outcome == "new" and state[1] != 1:
                    raise AssertionError(f"{state[1]} segments after a compaction")
            except Exception as exc:  # noqa: BLE001  a broken index is the finding, not a crash of the loop
                outcome = "broken"
                broken.append({"point": i, "delay": delay, "where": place, "error": f"{type(exc).__name__}: {exc}"})
            if not result["killed"] and result["exit"] != 0:
                outcome = "broken"
                broken.append({"point": i, "delay": delay, "error": f"build failed without a kill: {result}"})
            outcomes[outcome] += 1
            by_op.setdefault(op, {"old": 0, "new": 0, "broken": 0})[outcome] += 1
            if echo:
                echo(f"{i:4d} {op:7s} kill at {delay:.3f}s  {place:16s} -> {outcome} "
                     f"({state[0]} items, {state[1]} segments)")
    finally:
        helper.close()
    return {"duration": duration, "outcomes": outcomes, "where": places, "by_op": by_op, "broken": broken}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200, help="number of kills (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widen", type=float, default=0.0,
                        help="seconds each build sleeps after each rename of its swap (default 0: real timing)")
    parser.add_argument("--root", type=Path, help="work folder (default: a new temporary one)")
    parser.add_argument("--ops", default="build,add,remove,sync,compact", help="writes drawn from (default all five)")
    parser.add_argument("--helper", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.helper is not None:
        _serve(args.helper, args.widen)
        return
    root = args.root or Path(tempfile.mkdtemp(prefix="kill-test-"))
    corpora = ((root / "a", write_docs(root / "a", 30, seed=1)), (root / "b", write_docs(root / "b", 20, seed=2)))
    write_docs(root / "extra", 2, seed=3)
    for path in (root / "extra").rglob("*.txt"):
        path.rename(path.with_name("x" + path.name))  # ids of their own
    started = time.perf_counter()
    report = kill_loop(root / "home", corpora, args.points, args.seed, args.widen, log=root / "builds.log",
                       echo=lambda line: print(line, file=sys.stderr, flush=True), extra=root / "extra",
                       ops=tuple(args.ops.split(",")))
    out = report["outcomes"]
    durations = ", ".join(f"{op} {d:.2f}s" for op, d in report["duration"].items())
    print(f"{args.points} kills (seed {args.seed}, widen {args.widen}s, unkilled: {durations}; "
          f"{time.perf_counter() - started:.0f}s in all): old state {out['old']}, new state {out['new']}, "
          f"broken {out['broken']}")
    print("by write: " + "; ".join(f"{op} {c}" for op, c in sorted(report["by_op"].items())))
    print("killed during: " + ", ".join(f"{k} {v}" for k, v in sorted(report["where"].items())))
    for item in report["broken"]:
        print("BROKEN", item)
    sys.exit(1 if out["broken"] else 0)


if __name__ == "__main__":
    main()
