"""Benchmark and end-to-end check of :func:`retrieval.crawl.crawl`.

Generates a site of ``--pages`` HTML pages and ``--images`` distinct PNGs,
serves it from memory on 127.0.0.1 in a background thread, crawls it into a
temporary folder and checks the result against the server's own hit counts:
every page and every image must have been requested exactly once, every image
saved once, and the number of simultaneous requests must never have exceeded
``--concurrency``.

The pages form a tree (page ``i`` links to pages ``i*b+1 .. i*b+b``) whose
branching factor ``b`` is the smallest that fits all pages within
``--max-depth``; each page also links back to its parent and to the index so
the crawler meets many links it has already seen. Image ``j`` is referenced
first from page ``j % pages`` (as ``<img src>``, ``srcset``, ``<picture>`` or an
``<a href>`` to the file), and every page also shows a few random other images,
so many images are referenced from several pages.

Usage::

    python benchmarks/crawl_bench.py --pages 1000 --images 2000 --concurrency 8

Exits with status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

# Run from a source checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval.sources.crawl import MANIFEST_NAME, CrawlConfig, crawl  # noqa: E402


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default of 5 drops connections under load

    def handle_error(self, request: object, client_address: object) -> None:
        # The crawler hangs up on purpose (size cap, timeout, interruption).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Site:
    """An in-memory site with per-path hit counts and an in-flight gauge."""

    def __init__(self, routes: dict[str, tuple[bytes, str]], latency: float) -> None:
        self.routes = routes
        self.latency = latency
        self.hits: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # two writes per reply; avoid ACK stalls

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                site.handle(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[handler.path] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            body, ctype = self.routes.get(handler.path, (b"not found", "text/plain"))
            status = 200 if handler.path in self.routes else 404
        finally:
            # Counted down before replying so the gauge can only undercount.
            with self._lock:
                self.in_flight -= 1
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def branching_for(pages: int, max_depth: int) -> int:
    """Smallest branching factor putting ``pages`` tree nodes within ``max_depth``."""
    b = 1
    while sum(b**d for d in range(max_depth + 1)) < pages:
        b += 1
    return b


def page_path(i: int) -> str:
    return "/" if i == 0 else f"/p/{i}.html"


def image_path(j: int) -> str:
    return f"/img/{j // 100}/{j}.png"


def make_png(j: int) -> bytes:
    rng = random.Random(j)
    size = (8 + j % 23, 8 + (j // 23) % 17)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    # Pixel (0, 0) spells out j, so every image body is distinct.
    image.putpixel((0, 0), (j % 256, (j >> 8) % 256, (j >> 16) % 256))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def build_site(
    pages: int, images: int, max_depth: int, extra_refs: int, seed: int
) -> tuple[dict[str, tuple[bytes, str]], int, int]:
    """Return (routes, branching, number of image references in the HTML)."""
    rng = random.Random(seed)
    b = branching_for(pages, max_depth)
    on_page: list[list[str]] = [[] for _ in range(pages)]
    references = 0
    for j in range(images):
        style = j % 4
        src = image_path(j)
        if style == 0:
            html = f'<img src="{src}" alt="image {j}">'
        elif style == 1:  # srcset whose second candidate is an image shown elsewhere
            other = image_path(rng.randrange(images))
            html = f'<img srcset="{src} 1x, {other} 2x" alt="image {j}">'
            references += 1
        elif style == 2:
            fallback = image_path((j + 1) % images)
            html = f'<picture><source srcset="{src}"><img src="{fallback}"></picture>'
            references += 1
        else:
            html = f'<a href="{src}">download {j}</a>'
        on_page[j % pages].append(html)
        references += 1
    routes: dict[str, tuple[bytes, str]] = {
        "/robots.txt": (b"User-agent: *\nDisallow:\n", "text/plain"),
    }
    for i in range(pages):
        links = [page_path(c) for c in range(i * b + 1, min(i * b + b, pages - 1) + 1)]
        if i:
            links += [page_path((i - 1) // b), "/"]
        shown = [f'<img src="{image_path(rng.randrange(images))}">' for _ in range(extra_refs)]
        references += len(shown)
        body = (
            f"<!doctype html><html><head><title>Page {i}</title></head><body>"
            + "".join(f'<a href="{link}">{link}</a> ' for link in links)
            + "".join(on_page[i]) + "".join(shown)
            + "</body></html>"
        )
        routes[page_path(i)] = (body.encode(), "text/html; charset=utf-8")
    for j in range(images):
        routes[image_path(j)] = (make_png(j), "image/png")
    return routes, b, references


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("--extra-refs", type=int, default=2,
                        help="random already-known images shown on each page")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the server sleeps before each reply")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pages < 1 or args.images < 1:
        parser.error("--pages and --images must be at least 1")

    started = time.perf_counter()
    routes, branching, references = build_site(
        args.pages, args.images, args.max_depth, args.extra_refs, args.seed
    )
    print(
        f"site: {args.pages} pages (tree, branching {branching}, depth <= "
        f"{args.max_depth}), {args.images} distinct images, {references} image "
        f"references; generated in {time.perf_counter() - started:.2f} s"
    )
    site = Site(routes, args.latency)
    config = CrawlConfig(
        max_depth=args.max_depth,
        max_pages=args.pages,
        max_images=max(args.images, CrawlConfig.max_images),
        concurrency=args.concurrency,
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            report = crawl(site.base + "/", out, config)
            entries = [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]
            bad_files = sum(
                hashlib.sha256((out / e["file"]).read_bytes()).hexdigest() != e["sha256"]
                for e in entries
            )
            files = sum(1 for p in out.iterdir() if p.name != MANIFEST_NAME)
    finally:
        site.close()

    image_paths = [image_path(j) for j in range(args.images)]
    page_paths = [page_path(i) for i in range(args.pages)]
    image_hits = [site.hits[p] for p in image_paths]
    page_hits = [site.hits[p] for p in page_paths]
    saved_urls = Counter(e["url"].removeprefix(site.base) for e in entries)
    checks = {
        "every page fetched exactly once": all(n == 1 for n in page_hits),
        "every image fetched exactly once": all(n == 1 for n in image_hits),
        "every image saved exactly once": sorted(saved_urls) == sorted(image_paths)
        and all(n == 1 for n in saved_urls.values()),
        "manifest sha256 matches files": bad_files == 0 and files == len(entries),
        "nothing skipped": not report.skipped,
        "in-flight <= concurrency": max(report.max_in_flight, site.max_in_flight)
        <= args.concurrency,
    }
    print(f"pages crawled:   {report.pages} (expected {args.pages})")
    print(
        f"images saved:    {report.images} (expected {args.images}); duplicates "
        f"{report.duplicates}, skipped {len(report.skipped)}, already had {report.already_had}"
    )
    print(
        f"server hits:     images hit once {image_hits.count(1)}, never "
        f"{image_hits.count(0)}, more than once {sum(n > 1 for n in image_hits)}; "
        f"pages hit once {page_hits.count(1)}/{args.pages}; robots.txt "
        f"{site.hits['/robots.txt']}; total requests {sum(site.hits.values())}"
    )
    print(f"manifest:        {len(entries)} lines, {files} files, {bad_files} sha256 mismatches")
    print(
        f"max in flight:   {report.max_in_flight} (crawler), {site.max_in_flight} "
        f"(server) vs configured concurrency {args.concurrency}"
    )
    total = sum(site.hits.values())
    print(f"wall seconds:    {report.seconds:.2f} ({total / report.seconds:.0f} requests/s)")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    complete = all(checks.values())
    print("completeness:   ", "PASS" if complete else "FAIL")
    if report.skipped:
        for url, reason in report.skipped[:10]:
            print(f"  skipped {url}: {reason}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
