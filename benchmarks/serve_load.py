"""Load test of `retrieval serve` on loopback: throughput and latency, and an index swapped during load.

Starts the server itself (``python -m retrieval serve ...`` in a subprocess,
stopped by its PID at the end), then runs a bounded asyncio httpx load: for
each concurrency, ``--duration`` seconds of back-to-back requests from that
many workers, after a short warm-up. Reported per run: requests/s, p50 and
p99 latency, failed requests, and the server's CPU time per request (from
/proc). Client and server share the machine: on 2 cores the load generator
takes one of them.

    # text (20NG) and image (Fashion-MNIST) indexes, concurrency 1, 8, 32
    python benchmarks/serve_load.py --home /work/bench-indexes --text-index 20ng-32 --image-index fashion

    # swap during load: 60 s of text queries at concurrency 8; an add (API) at 15 s and
    # a remove-items (CLI, another process) at 35 s; the index is copied to a temporary home first
    python benchmarks/serve_load.py --home /work/bench-indexes --text-index 20ng-32 --swap 60

Image queries upload PNGs of Fashion-MNIST test images (``--idx``) when the
file exists, else they are ``like`` queries on item ids 0..199.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "load-test-token"
#: Text queries: topical phrases of the 20 newsgroups, searched in turn.
TEXT_QUERIES = [
    "space shuttle launch orbit nasa", "graphics card video driver windows", "gun control second amendment",
    "israel arab peace talks", "hockey playoff goalie score", "baseball pitcher season hitting",
    "encryption key clipper chip government", "car engine oil brake dealer", "motorcycle helmet riding bike",
    "jesus christ bible faith church", "atheism god existence morality", "printer font postscript file",
    "scsi ide hard disk controller", "mac apple monitor powerbook", "x window server motif widget",
    "circuit voltage amplifier power supply", "doctor patient disease treatment", "sale offer shipping price",
    "armenian turkish genocide history", "homosexual gay rights clinton", "moon lunar base colony",
    "jpeg image compression format", "modem serial port speed", "vitamin diet food allergy",
    "satellite telescope hubble mission", "windows dos memory driver crash", "hockey team nhl season",
    "waco fbi koresh fire", "tax government budget deficit", "battery charger solar panel",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``python -m retrieval serve`` in a subprocess, stopped by PID."""

    def __init__(self, home: Path, names: list[str], log: Path, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "retrieval", "serve", *names, "--port", str(self.port), "--index-dir", str(home)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        if token:
            env["RETRIEVAL_TOKEN"] = token
        self.log = log.open("wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}); see {log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 600:
                self.stop()
                raise SystemExit(f"the server did not answer /healthz within 600 s; see {log}")
            time.sleep(0.25)
        self.startup = time.monotonic() - started

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


async def load(url: str, requests: list[dict], concurrency: int, duration: float, pid: int | None = None,
               warmup: float = 1.0) -> dict:
    """``duration`` seconds of back-to-back requests from ``concurrency`` workers."""
    latencies: list[float] = []
    failures: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker(i: int, stop: float, record: bool) -> None:
            n = i
            while time.perf_counter() < stop:
                req = requests[n % len(requests)]
                n += concurrency
                t = time.perf_counter()
                try:
                    r = await client.request(**req)
                    ok = r.status_code == 200
                    reason = f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as exc:
                    ok, reason = False, f"{type(exc).__name__}: {exc}"
                if record:
                    latencies.append(time.perf_counter() - t)
                    if not ok:
                        failures.append(reason)

        await asyncio.gather(*(worker(i, time.perf_counter() + warmup, False) for i in range(concurrency)))
        cpu0 = cpu_seconds(pid) if pid else None
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i, t0 + duration, True) for i in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0 if pid else None
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(lat), "seconds": round(elapsed, 2),
            "rps": round(len(lat) / elapsed, 1), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "errors": len(failures),
            "first_errors": failures[:3],
            "server_cpu_ms_per_request": round(cpu * 1000 / max(1, len(lat)), 3) if cpu is not None else None}


def text_requests(name: str, method: str | None, novelty: bool = True) -> list[dict]:
    extra = ({"method": method} if method else {}) | ({} if novelty else {"novelty": False})
    return [{"method": "POST", "url": f"/api/indexes/{name}/search", "json": {"text": q, "k": 10, **extra}}
            for q in TEXT_QUERIES]


def image_requests(name: str, idx: Path, n: int = 200) -> tuple[list[dict], str]:
    if idx.exists():
        from PIL import Image

        from retrieval.sources.images import read_idx

        pixels = read_idx(idx)[:n]
        out = []
        for arr in pixels:
            buf = io.BytesIO()
            Image.fromarray(np.asarray(arr, np.uint8).reshape(arr.shape[0], arr.shape[1])).save(buf, format="PNG")
            out.append({"method": "POST", "url": f"/api/indexes/{name}/search",
                        "files": {"image": ("q.png", buf.getvalue(), "image/png")}, "data": {"k": "10"}})
        return out, f"PNG uploads of {len(out)} test images ({idx.name})"
    return ([{"method": "POST", "url": f"/api/indexes/{name}/search", "json": {"like": str(i), "k": 10}}
             for i in range(n)], f"like queries on ids 0..{n - 1}")


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server CPU ms/req':>18}")
    for r in rows:
        print(f"{r['concurrency']:>5} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7} "
              f"{r['server_cpu_ms_per_request']!s:>18}")
        for e in r["first_errors"]:
            print(f"      error: {e}")


async def swap_during_load(args, workdir: Path) -> dict:
    """A text load at concurrency 8 while an add (API) and a remove-items (CLI) swap the index."""
    home = workdir / "home"
    shutil.copytree(Path(args.home) / args.text_index, home / args.text_index)
    server = Server(home, [args.text_index], workdir / "server-swap.log", token=TOKEN)
    name = args.text_index
    doc_id = f"swap-test/{int(time.time())}"
    # The document's own text is the query: its code equals the query's, so it ranks first once indexed.
    text = ("orbit shuttle telescope graphics hockey encryption motorcycle vitamin armenian printer "
            "voltage pitcher clipper helmet")
    events: dict = {"doc_id": doc_id}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            async def found() -> bool:
                r = await client.post(f"/api/indexes/{name}/search", json={"text": text, "k": 10, "novelty": False})
                return doc_id in [h["id"] for h in r.json()["hits"]]

            async def wait_until(want: bool, since: float) -> float:
                deadline = time.perf_counter() + 30
                while await found() != want:
                    if time.perf_counter() > deadline:
                        return float("inf")
                    await asyncio.sleep(0.05)
                return round(time.perf_counter() - since, 3)

            async def writer() -> None:
                await asyncio.sleep(args.swap * 0.25)
                t = time.perf_counter()
                r = await client.post(f"/api/indexes/{name}/items", json={"items": [{"id": doc_id, "text": text}]},
                                      headers={"Authorization": f"Bearer {TOKEN}"})
                done = time.perf_counter()
                events["add"] = {"status": r.status_code, "report": r.json(), "request_s": round(done - t, 3),
                                 "found_after_response_s": await wait_until(True, done),
                                 "found_after_request_s": round(time.perf_counter() - t, 3)}
                await asyncio.sleep(max(0.0, args.swap * 0.6 - (time.perf_counter() - started)))
                t = time.perf_counter()
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "retrieval", "remove-items", name, "--id", doc_id, "--index-dir", str(home),
                    env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                out, err = await cli.communicate()
                done = time.perf_counter()
                events["remove"] = {"exit": cli.returncode, "cli_s": round(done - t, 3),
                                    "stderr": err.decode()[-300:] if cli.returncode else "",
                                    "gone_after_cli_exit_s": await wait_until(False, done)}

            started = time.perf_counter()
            result, _ = await asyncio.gather(
                load(server.url, text_requests(name, None), 8, args.swap, server.proc.pid, warmup=0.5), writer())
    finally:
        server.stop()
    return {"load": result, **events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", default=os.environ.get("RETRIEVAL_HOME", "indexes"), help="Store of the indexes.")
    parser.add_argument("--text-index", default="20ng-32")
    parser.add_argument("--image-index", default="fashion")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of load per concurrency.")
    parser.add_argument("--method", default=None, help="Search method (default: the index's, ae).")
    parser.add_argument("--no-novelty", action="store_true", help="Text queries ask for no novelty score.")
    parser.add_argument("--idx", type=Path, default=Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))
    parser.add_argument("--swap", type=float, default=0, help="Run the swap-during-load test for this many seconds.")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()
    home = Path(args.home)
    levels = [int(c) for c in args.concurrency.split(",")]
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = Path(tmp)
        if args.swap:
            report["swap"] = asyncio.run(swap_during_load(args, workdir))
            print(json.dumps(report["swap"], indent=2))
        else:
            names = [n for n in (args.text_index, args.image_index) if (home / n / "manifest.json").exists()]
            if not names:
                raise SystemExit(f"neither {args.text_index} nor {args.image_index} is an index in {home}")
            server = Server(home, names, workdir / "server.log")
            report["startup_s"] = round(server.startup, 1)
            print(f"server up in {server.startup:.1f} s serving {', '.join(names)}")
            try:
                if args.text_index in names:
                    reqs = text_requests(args.text_index, args.method, not args.no_novelty)
                    rows = [asyncio.run(load(server.url, reqs, c, args.duration, server.proc.pid)) for c in levels]
                    report["text"] = {"index": args.text_index, "novelty": not args.no_novelty, "rows": rows}
                    print_rows(f"text queries, {args.text_index}" + ("" if not args.no_novelty else " (no novelty)"), rows)
                if args.image_index in names:
                    reqs, kind = image_requests(args.image_index, args.idx)
                    rows = [asyncio.run(load(server.url, reqs, c, args.duration, server.proc.pid)) for c in levels]
                    report["images"] = {"index": args.image_index, "queries": kind, "rows": rows}
                    print_rows(f"image queries ({kind}), {args.image_index}", rows)
            finally:
                server.stop()
    report["machine"]["load_average_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
