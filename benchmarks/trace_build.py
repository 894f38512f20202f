"""Build a document index as ``retrieval index docs`` does (the library's ``build_index``), tracing it.

Each stage change (or every 60 s within a stage) is printed with the elapsed
time, the RSS and the peak RSS so far, so a long build shows where its time
and memory go::

    /usr/bin/time -v python benchmarks/trace_build.py SOURCE HOME ['{"train_sample": 10000}']

The third argument is ``DocsConfig`` options as JSON; the index is named ``t``
in the home ``HOME`` (replaced if it exists).
"""
import json, sys, time, resource
from pathlib import Path
t0 = time.perf_counter()
last = {"task": None, "t": 0.0}

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1

def progress(task, done, total, info):
    now = time.perf_counter() - t0
    if task != last["task"] or now - last["t"] > 60:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(f"{now:8.1f}s {task:12s} {done}/{total} {json.dumps(info, default=str)[:120]} rss={rss_mb()}MB peak={peak}MB", flush=True)
        last.update(task=task, t=now)

src, home = sys.argv[1], sys.argv[2]
kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
from retrieval.storage import Store
from retrieval.writer import build_index
from retrieval.modality import DOCS
from retrieval.config import DocsConfig
cfg = DocsConfig(**kwargs)
m = build_index(DOCS, src, "t", cfg, store=Store(Path(home)), force=True, progress=progress)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"DONE {time.perf_counter()-t0:.1f}s peak={peak}MB build_seconds={m['build_seconds']}", flush=True)
print(json.dumps({k: v.get("fit_seconds") for k, v in m["methods"].items()}))
