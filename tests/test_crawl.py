"""Tests of the image crawler against generated sites served on 127.0.0.1.

No test touches the network: every site is a ThreadingHTTPServer on a free
local port, and every image is generated with Pillow.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from retrieval.sources.crawl import (
    DEFAULT_USER_AGENT,
    MANIFEST_NAME,
    RUNS_NAME,
    CrawlConfig,
    CrawlReport,
    _extract_refs,
    _parse_srcset,
    crawl,
    fetch_image_bytes,
)
from retrieval.errors import FetchError, InputError, RetrievalWarning

# Short enough to keep the file fast, long enough for a loaded CI machine;
# retries of 429/503 answers wait milliseconds, not seconds.
CONFIG = CrawlConfig(timeout=3.0, backoff=0.01)


# --------------------------------------------------------------------------
# A programmable local web site


@dataclass
class Resp:
    """One canned response."""

    body: bytes = b""
    content_type: str | None = "text/html; charset=utf-8"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True  # False: stream until the connection closes
    stall: float = 0.0  # seconds to hang before answering
    drop: bool = False  # close the connection without answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections under a concurrent crawl.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        # The crawler hangs up on purpose (size cap, timeout, interruption).
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Site:
    """A local HTTP server whose routes, hits and concurrency tests inspect."""

    def __init__(self, host_name: str = "127.0.0.1") -> None:
        self.routes: dict[str, Resp | list[Resp]] = {}
        self.hits: Counter[str] = Counter()
        self.user_agents: list[str] = []
        self.request_times: list[tuple[str, float]] = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, keep-alive
            # requests wait ~40 ms each for a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                site._handle(self)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"{host_name}:{self.port}"
        self.base = f"http://{self.host}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def page(self, path: str, html: str) -> None:
        self.routes[path] = Resp(html.encode("utf-8"))

    def image(self, path: str, data: bytes, content_type: str = "image/png") -> None:
        self.routes[path] = Resp(data, content_type)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = Resp(b"", None, status, {"Location": location})

    def image_hits(self) -> int:
        return sum(n for path, n in self.hits.items() if not path.endswith((".html", "/", ".txt")))

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[handler.path] += 1
            self.user_agents.append(handler.headers.get("User-Agent", ""))
            self.request_times.append((handler.path, time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            resp = self.routes.get(handler.path) or Resp(b"<h1>not found</h1>", status=404)
            if isinstance(resp, list):  # answers in turn, the last one for good
                resp = resp.pop(0) if len(resp) > 1 else resp[0]
            if resp.stall:
                self._release.wait(resp.stall)
        finally:
            # Counted down before the reply goes out, so the count can only
            # undercount what the client sees as in flight, never overcount.
            with self._lock:
                self.in_flight -= 1
        if resp.drop:
            handler.close_connection = True
            return
        try:
            handler.send_response(resp.status)
            if resp.content_type:
                handler.send_header("Content-Type", resp.content_type)
            for name, value in resp.headers.items():
                handler.send_header(name, value)
            if resp.send_length:
                handler.send_header("Content-Length", str(len(resp.body)))
            else:
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(resp.body)
        except OSError:  # the crawler hung up on purpose (size cap, timeout)
            handler.close_connection = True

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site("127.0.0.1")
    yield s
    s.close()


@pytest.fixture
def other_site():
    """A second host: same machine, different host name and port."""
    s = Site("localhost")
    yield s
    s.close()


def make_image(n: int, fmt: str = "PNG", size: tuple[int, int] | None = None) -> bytes:
    """A small image whose size and colour make its bytes unique per ``n``."""
    size = size or (10 + n, 6 + (n % 7))
    image = Image.new("RGB", size, ((n * 37) % 256, (n * 91) % 256, (n * 53) % 256))
    image.putpixel((0, 0), (n % 256, (n // 256) % 256, 7))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def read_manifest(out_dir: Path) -> list[dict]:
    lines = (out_dir / MANIFEST_NAME).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def skip_reason(report: CrawlReport, url: str) -> str:
    reasons = [reason for skipped_url, reason in report.skipped if skipped_url == url]
    assert len(reasons) == 1, f"{url} skipped {len(reasons)} times: {report.skipped}"
    return reasons[0]


def route(path: str, resp: Resp) -> Callable[[Site], None]:
    """A site setup step that installs one canned response."""
    return lambda s: s.routes.update({path: resp})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------
# Link extraction and the whole happy path


def test_crawl_collects_every_kind_of_image_reference_and_writes_manifest(site, tmp_path):
    images = {
        "/img/rel.png": (make_image(1), "image/png", (11, 7)),
        "/proto.png": (make_image(2), "image/png", (12, 8)),
        "/fallback.png": (make_image(3), "image/png", (13, 9)),
        "/small.png": (make_image(4), "image/png", (14, 10)),
        "/large.png": (make_image(5), "image/png", (15, 11)),
        "/pic.webp": (make_image(6, "WEBP"), "image/webp", (16, 12)),
        "/pic2.jpg": (make_image(7, "JPEG"), "image/jpeg", (17, 6)),
        "/pic.png": (make_image(8), "image/png", (18, 7)),
        "/photo.JPG": (make_image(9, "JPEG"), "image/jpeg", (19, 8)),
        "/img/p2.gif": (make_image(10, "GIF"), "image/gif", (20, 9)),
        # Right magic bytes, unreadable body: saved, but without a size.
        "/broken.png": (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 4, "image/png", None),
    }
    for path, (data, ctype, _) in images.items():
        site.image(path, data, ctype)
    site.page("/", f"""<!doctype html><html><body>
        <a href="page2.html">relative page</a>
        <a href="/page2.html#section">same page, other fragment</a>
        <a href="javascript:location='/js-trap.html'">js</a>
        <a href="mailto:someone@example.com">mail</a>
        <a href="tel:+15550100">call</a>
        <a href="data:text/html,<a href=/data-trap.html>x</a>">data</a>
        <img src="img/rel.png" alt="Relative image">
        <img src="//{site.host}/proto.png#frag" alt="Protocol  relative">
        <img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">
        <img src="fallback.png" srcset="small.png 1x, /large.png 2x" alt="Srcset">
        <picture>
          <source srcset="pic.webp 1x, pic2.jpg 2x" type="image/webp">
          <img src="pic.png" alt="Picture alt">
        </picture>
        <a href="photo.JPG">full size</a>
        <img src="broken.png">
    </body></html>""")
    site.page("/page2.html", '<p><img src="../img/p2.gif" alt=""><a href="/">home</a></p>')

    report = crawl(site.url("/"), tmp_path, CONFIG)

    # Every reference fetched exactly once; no trap or non-HTTP link requested.
    expected = {"/robots.txt", "/", "/page2.html", *images}
    assert set(site.hits) == expected
    assert all(n == 1 for n in site.hits.values()), site.hits
    assert report.pages == 2
    assert report.images == len(images)
    assert report.duplicates == 0 and report.already_had == 0
    assert report.skipped == []
    assert report.seconds > 0
    assert 1 <= report.max_in_flight <= CONFIG.concurrency

    entries = read_manifest(tmp_path)
    assert len(entries) == len(images)
    by_url = {entry["url"]: entry for entry in entries}
    assert set(by_url) == {site.url(path) for path in images}
    now = datetime.now(timezone.utc)
    for path, (data, ctype, size) in images.items():
        entry = by_url[site.url(path)]
        sha = hashlib.sha256(data).hexdigest()
        assert entry["sha256"] == sha
        assert entry["bytes"] == len(data)
        assert entry["content_type"] == ctype
        assert entry["file"].startswith(sha[:16] + ".")
        assert (tmp_path / entry["file"]).read_bytes() == data
        assert (entry["width"], entry["height"]) == (size or (None, None))
        fetched = datetime.fromisoformat(entry["fetched_at"])
        assert fetched.utcoffset() == timedelta(0)
        assert abs(now - fetched) < timedelta(minutes=1)
    # Extensions come from magic bytes.
    assert by_url[site.url("/photo.JPG")]["file"].endswith(".jpg")
    assert by_url[site.url("/pic.webp")]["file"].endswith(".webp")
    assert by_url[site.url("/img/p2.gif")]["file"].endswith(".gif")
    # alt and page_url come from the referencing element and page.
    assert by_url[site.url("/img/rel.png")]["alt"] == "Relative image"
    assert by_url[site.url("/proto.png")]["alt"] == "Protocol relative"
    assert by_url[site.url("/small.png")]["alt"] == "Srcset"
    assert by_url[site.url("/pic.webp")]["alt"] == "Picture alt"
    assert by_url[site.url("/photo.JPG")]["alt"] == ""
    assert by_url[site.url("/broken.png")]["alt"] == ""
    assert by_url[site.url("/img/p2.gif")]["page_url"] == site.url("/page2.html")
    assert by_url[site.url("/pic.png")]["page_url"] == site.url("/")
    # Only the images and the manifest are left behind (no temp files).
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [MANIFEST_NAME, RUNS_NAME, *(entry["file"] for entry in entries)]
    )


def test_parse_srcset_keeps_every_candidate():
    assert _parse_srcset("a.png 1x, b.png 2x") == ["a.png", "b.png"]
    assert _parse_srcset(" a.png 100w,b.png  200w ,c.png") == ["a.png", "b.png", "c.png"]
    # A comma inside a URL is part of it; descriptors may hold parentheses.
    assert _parse_srcset("img,1.png 1x, d.png (x, y) 2x, e.png") == ["img,1.png", "d.png", "e.png"]
    assert _parse_srcset("a.png,, b.png") == ["a.png", "b.png"]
    assert _parse_srcset("  ,  ") == []


def test_extract_refs_honours_base_href_and_drops_non_http():
    refs = _extract_refs(
        '<base href="/sub/"><a href="x.html#f">x</a><a href="JavaScript:void(0)">j</a>'
        '<a href="//cdn.example/p.JPEG">photo</a><img src="data:image/gif;base64,R0lG">'
        '<a href="ftp://example.com/f">ftp</a><img src="  i.png  " alt="I">',
        "http://Example.com:80/dir/page.html",
    )
    assert refs.links == ["http://example.com/sub/x.html"]
    assert refs.images == [("http://cdn.example/p.JPEG", ""), ("http://example.com/sub/i.png", "I")]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from('<>a="/ \':#,&;imgsrcethfpjv1.x'), max_size=120))
def test_extract_refs_survives_arbitrary_markup(markup):
    refs = _extract_refs(markup, "http://example.com/a/b.html")
    for url in [*refs.links, *(url for url, _ in refs.images)]:
        assert url.startswith(("http://", "https://"))
        assert "#" not in url


# --------------------------------------------------------------------------
# Failures are skips with reasons


def test_http_errors_and_unreachable_hosts_are_skipped_with_reasons(site, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}/gone.png"
    site.image("/ok.png", make_image(1))
    site.routes["/error.html"] = Resp(b"oops", status=500)
    site.routes["/error.png"] = Resp(b"oops", "image/png", status=503)
    site.page("/", f"""
        <a href="/missing.html">404 page</a><a href="/error.html">500 page</a>
        <img src="/missing.png"><img src="/error.png"><img src="{dead}">
        <img src="/ok.png">""")

    with pytest.warns(RetrievalWarning, match="robots.txt unavailable"):
        report = crawl(site.url("/"), tmp_path, CONFIG)

    assert report.pages == 1 and report.images == 1
    assert skip_reason(report, site.url("/missing.html")).startswith("HTTP 404")
    assert skip_reason(report, site.url("/error.html")).startswith("HTTP 500")
    assert skip_reason(report, site.url("/missing.png")).startswith("HTTP 404")
    assert skip_reason(report, site.url("/error.png")).startswith("HTTP 503")
    assert "connection failed" in skip_reason(report, dead)
    assert len(report.skipped) == 5


def test_redirects_loops_and_chains(site, tmp_path):
    site.redirect("/loop-a.html", "/loop-b.html")
    site.redirect("/loop-b.html", "/loop-a.html")
    site.redirect("/self.png", "/self.png", status=301)
    for i in range(7):
        site.redirect(f"/chain{i}.png", f"/chain{i + 1}.png", status=307)
    site.image("/chain7.png", make_image(1))
    site.redirect("/moved.png", "/real.png", status=308)
    site.image("/real.png", make_image(2))
    site.page("/", """<a href="/loop-a.html">loop</a>
        <img src="/self.png"><img src="/chain0.png"><img src="/moved.png">""")

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, max_redirects=5))

    loop = skip_reason(report, site.url("/loop-a.html"))
    assert loop.startswith("redirect loop") and "/loop-b.html" in loop
    assert skip_reason(report, site.url("/self.png")).startswith("redirect loop")
    assert "too many redirects" in skip_reason(report, site.url("/chain0.png"))
    assert site.hits["/chain6.png"] == 0  # gave up after 5 redirects
    assert site.hits["/loop-a.html"] == 1  # a loop is noticed, not re-walked
    # A plain redirect is followed; the manifest keeps both URLs.
    assert report.images == 1
    [entry] = read_manifest(tmp_path)
    assert entry["url"] == site.url("/moved.png")
    assert entry["final_url"] == site.url("/real.png")


def test_content_type_and_magic_bytes_are_both_checked(site, tmp_path):
    site.image("/html.png", b"<html>not an image</html>", "text/html")
    site.image("/garbage.png", b"this is not an image at all", "image/png")
    site.image("/svg.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")
    site.image("/no-type.png", make_image(1), None)
    site.image("/mislabelled.jpg", make_image(2), "image/jpeg")  # PNG bytes
    site.routes["/data.html"] = Resp(b'{"a": 1}', "application/json")
    site.page("/", """<img src="/html.png"><img src="/garbage.png">
        <img src="/svg.svg"><img src="/no-type.png"><img src="/mislabelled.jpg">
        <a href="/data.html">json</a>""")

    report = crawl(site.url("/"), tmp_path, CONFIG)

    assert "text/html is not image/*" in skip_reason(report, site.url("/html.png"))
    assert "not a supported image" in skip_reason(report, site.url("/garbage.png"))
    assert "not a supported image" in skip_reason(report, site.url("/svg.svg"))
    assert "missing is not image/*" in skip_reason(report, site.url("/no-type.png"))
    assert "not an HTML page" in skip_reason(report, site.url("/data.html"))
    # The magic bytes name the format, whatever the header or URL claims.
    assert report.images == 1
    [entry] = read_manifest(tmp_path)
    assert entry["file"].endswith(".png")
    assert entry["content_type"] == "image/jpeg"


def test_responses_over_max_bytes_are_refused(site, tmp_path):
    cap = 4000
    big = make_image(1, size=(10, 10)) + b"\x00" * cap
    site.image("/declared.png", big)  # Content-Length says too large
    site.routes["/streamed.png"] = Resp(big, "image/png", send_length=False)
    site.routes["/big.html"] = Resp(b"<p>" + b"x" * cap, send_length=False)
    site.image("/small.png", make_image(2))
    site.page("/", """<img src="/declared.png"><img src="/streamed.png">
        <img src="/small.png"><a href="/big.html">big page</a>""")

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, max_bytes=cap))

    declared = skip_reason(report, site.url("/declared.png"))
    assert "too large" in declared and "Content-Length" in declared
    assert "exceeds max_bytes 4000" in skip_reason(report, site.url("/streamed.png"))
    assert "exceeds max_bytes" in skip_reason(report, site.url("/big.html"))
    assert report.images == 1 and report.pages == 1


def test_a_stalled_server_times_out_without_stalling_the_crawl(site, tmp_path):
    site.routes["/slow.png"] = Resp(make_image(1), "image/png", stall=10)
    site.routes["/slow.html"] = Resp(b"<p>late</p>", stall=10)
    site.image("/fast.png", make_image(2))
    site.page("/", '<img src="/slow.png"><img src="/fast.png"><a href="/slow.html">s</a>')

    started = time.monotonic()
    report = crawl(site.url("/"), tmp_path, replace(CONFIG, timeout=0.5))

    assert time.monotonic() - started < 4
    # A timeout is retried once.
    assert skip_reason(report, site.url("/slow.png")) == "timed out after 0.5 s (2 attempts)"
    assert skip_reason(report, site.url("/slow.html")) == "timed out after 0.5 s (2 attempts)"
    assert site.hits["/slow.png"] == 2 and report.skip_reasons == {"timeout": 2}
    assert report.images == 1


# --------------------------------------------------------------------------
# Scope: hosts, robots.txt, limits


def test_pages_on_other_hosts_are_not_followed_but_their_images_are_fetched(
    site, other_site, tmp_path
):
    other_site.page("/page.html", '<img src="/deep.png">')
    other_site.image("/deep.png", make_image(1))
    other_site.image("/cdn.png", make_image(2))
    other_site.image("/cdn2.png", make_image(3))
    site.page("/", f"""<a href="{other_site.url('/page.html')}">elsewhere</a>
        <img src="{other_site.url('/cdn.png')}" alt="from a CDN">
        <img src="//{other_site.host}/cdn2.png">""")

    report = crawl(site.url("/"), tmp_path, CONFIG)

    assert other_site.hits["/page.html"] == 0 and other_site.hits["/deep.png"] == 0
    assert other_site.hits["/cdn.png"] == 1 and other_site.hits["/cdn2.png"] == 1
    assert other_site.hits["/robots.txt"] == 1  # the CDN's robots.txt is obeyed too
    assert report.pages == 1 and report.images == 2
    assert {e["url"] for e in read_manifest(tmp_path)} == {
        other_site.url("/cdn.png"), other_site.url("/cdn2.png")
    }

    # allow_hosts opens the other host to page crawling.
    report = crawl(site.url("/"), tmp_path / "allowed", replace(CONFIG, allow_hosts=("localhost",)))
    assert other_site.hits["/page.html"] == 1 and other_site.hits["/deep.png"] == 1
    assert report.pages == 2 and report.images == 3


def test_robots_txt_disallow_applies_to_pages_and_images(site, tmp_path):
    site.routes["/robots.txt"] = Resp(
        b"User-agent: retrieval\nDisallow: /private\n\nUser-agent: *\nDisallow: /\n",
        "text/plain",
    )
    site.page("/", """<a href="/private/secret.html">secret</a><a href="/public.html">p</a>
        <img src="/private/photo.png"><img src="/open.png">""")
    site.page("/private/secret.html", '<img src="/open2.png">')
    site.page("/public.html", "<p>hi</p>")
    site.image("/private/photo.png", make_image(1))
    site.image("/open.png", make_image(2))

    report = crawl(site.url("/"), tmp_path, CONFIG)

    # The "retrieval" group applies (not "*", which would forbid everything).
    assert skip_reason(report, site.url("/private/secret.html")) == "disallowed by robots.txt"
    assert skip_reason(report, site.url("/private/photo.png")) == "disallowed by robots.txt"
    assert site.hits["/private/secret.html"] == 0 and site.hits["/private/photo.png"] == 0
    assert site.hits["/robots.txt"] == 1
    assert report.pages == 2 and report.images == 1

    # respect_robots=False ignores the file entirely.
    report = crawl(site.url("/"), tmp_path / "all", replace(CONFIG, respect_robots=False))
    assert site.hits["/private/secret.html"] == 1 and site.hits["/robots.txt"] == 1
    assert report.images == 2 and report.skipped == [(site.url("/open2.png"), "HTTP 404 Not Found")]


def test_robots_txt_crawl_delay_spaces_requests(site, tmp_path):
    site.routes["/robots.txt"] = Resp(b"User-agent: *\nCrawl-delay: 0.25\n", "text/plain")
    for i in range(3):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", '<img src="/0.png"><img src="/1.png"><img src="/2.png">')

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, concurrency=4))

    assert report.images == 3
    starts = [t for path, t in site.request_times if path != "/robots.txt"]
    assert len(starts) == 4
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.2, gaps  # 0.25 s minus scheduling jitter


def test_unreachable_robots_txt_disallows_the_host_with_a_warning(site, other_site, tmp_path):
    other_site.routes["/robots.txt"] = Resp(b"down", "text/plain", status=503)
    other_site.image("/x.png", make_image(1))
    site.page("/", f'<img src="{other_site.url("/x.png")}">')

    with pytest.warns(RetrievalWarning, match="robots.txt unavailable"):
        report = crawl(site.url("/"), tmp_path, CONFIG)

    assert skip_reason(report, other_site.url("/x.png")) == "robots.txt unavailable (HTTP 503)"
    assert other_site.hits["/x.png"] == 0


def test_max_depth_limits_link_distance(site, tmp_path):
    for i in range(5):
        site.page(f"/p{i}.html", f'<a href="/p{i + 1}.html">next</a><img src="/i{i}.png">')
        site.image(f"/i{i}.png", make_image(i))

    report = crawl(site.url("/p0.html"), tmp_path, replace(CONFIG, max_depth=2))

    assert [site.hits[f"/p{i}.html"] for i in range(5)] == [1, 1, 1, 0, 0]
    assert report.pages == 3
    # Images on the deepest page are still collected.
    assert report.images == 3 and site.hits["/i2.png"] == 1 and site.hits["/i3.png"] == 0
    # The cut is reported: one link (to p3) left unfollowed.
    assert report.unfollowed == {"max_depth": 1}


def test_max_pages_prefers_shallow_pages(site, tmp_path):
    site.page("/", "".join(f'<a href="/d1-{i}.html">x</a>' for i in range(3)))
    for i in range(3):
        site.page(f"/d1-{i}.html", f'<a href="/d2-{i}.html">deeper</a>')
        site.page(f"/d2-{i}.html", "<p>deep</p>")

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, max_pages=3))

    assert report.pages == 3
    pages = [p for p in site.hits if p.endswith(".html")]
    assert len(pages) == 2 and all(p.startswith("/d1-") for p in pages)
    # One d1 page and the two d2 pages linked from the crawled d1 pages.
    assert report.unfollowed == {"max_pages": 3}


def test_max_images_is_exact(site, tmp_path):
    site.image("/missing-first.png", b"", "image/png")  # fails, frees its slot
    for i in range(10):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", '<img src="/missing-first.png">' + "".join(
        f'<img src="/{i}.png">' for i in range(10)))

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, max_images=3, concurrency=8))

    assert report.images == 3
    assert len(read_manifest(tmp_path)) == 3
    assert len(list(tmp_path.glob("*.png"))) == 3
    # Never more fetches than needed: one failure plus three successes.
    assert site.image_hits() == 4


# --------------------------------------------------------------------------
# Dedupe, resume, concurrency, progress, User-Agent


def test_same_image_under_several_urls_is_saved_once(site, tmp_path):
    data = make_image(1)
    for path in ("/a.png", "/b.png", "/c.png?v=2"):
        site.image(path, data)
    refs = '<img src="/a.png"><img src="/b.png"><img src="/c.png?v=2"><img src="/a.png#x">'
    site.page("/", refs + '<a href="/two.html">2</a>')
    site.page("/two.html", refs)

    report = crawl(site.url("/"), tmp_path, CONFIG)

    assert report.images == 1 and report.duplicates == 2
    assert [site.hits[p] for p in ("/a.png", "/b.png", "/c.png?v=2")] == [1, 1, 1]
    assert len(read_manifest(tmp_path)) == 1
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_second_run_resumes_from_the_manifest(site, tmp_path):
    for i in range(4):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", "".join(f'<img src="/{i}.png">' for i in range(4)))

    first = crawl(site.url("/"), tmp_path, CONFIG)
    assert first.images == 4
    hits_after_first = site.image_hits()

    second = crawl(site.url("/"), tmp_path, CONFIG)
    assert site.image_hits() == hits_after_first  # nothing refetched
    assert second.images == 0 and second.already_had == 4
    assert len(read_manifest(tmp_path)) == 4

    # New URLs are fetched; one turns out to be a body already saved.
    site.image("/new.png", make_image(9))
    site.image("/copy.png", make_image(0))
    site.page("/", "".join(f'<img src="/{i}.png">' for i in range(4))
              + '<img src="/new.png"><img src="/copy.png">')
    third = crawl(site.url("/"), tmp_path, CONFIG)
    assert third.images == 1 and third.already_had == 5
    assert site.hits["/new.png"] == 1 and site.hits["/copy.png"] == 1
    assert site.hits["/0.png"] == 1
    assert len(read_manifest(tmp_path)) == 5


def test_resume_tolerates_a_line_cut_short_by_an_interrupted_run(site, tmp_path):
    site.image("/a.png", make_image(1))
    site.image("/b.png", make_image(2))
    site.page("/", '<img src="/a.png"><img src="/b.png">')
    crawl(site.url("/"), tmp_path, CONFIG)
    manifest = tmp_path / MANIFEST_NAME
    lines = manifest.read_text().splitlines()
    # Simulate a kill in the middle of writing the second line.
    manifest.write_text(lines[0] + "\n" + lines[1][:20])
    lost_url = json.loads(lines[1])["url"]

    with pytest.warns(RetrievalWarning, match=r"manifest.jsonl:2"):
        report = crawl(site.url("/"), tmp_path, CONFIG)

    # The intact line is trusted; the image behind the cut line is fetched again
    # and its line is written after the broken one, on a line of its own.
    assert report.already_had == 1 and report.images == 1
    assert site.hits[lost_url.removeprefix(site.base)] == 2
    text = manifest.read_text().splitlines()
    assert len(text) == 3 and text[0] == lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(text[1])
    assert json.loads(text[2])["url"] == lost_url


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(site, tmp_path, concurrency):
    site.delay = 0.04
    for i in range(12):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", "".join(f'<img src="/{i}.png">' for i in range(12)))

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, concurrency=concurrency))

    assert report.images == 12
    assert site.max_in_flight <= concurrency
    assert report.max_in_flight <= concurrency
    if concurrency > 1:
        assert site.max_in_flight > 1 and report.max_in_flight > 1
    else:
        assert site.max_in_flight == 1 and report.max_in_flight == 1


def test_progress_callback_and_user_agent(site, tmp_path):
    for i in range(3):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", '<img src="/0.png"><a href="/b.html">b</a>')
    site.page("/b.html", '<img src="/1.png"><img src="/2.png">')
    calls: list[tuple[int, int]] = []

    report = crawl(site.url("/"), tmp_path, CONFIG, on_progress=lambda p, i: calls.append((p, i)))

    assert calls[0] == (1, 0)
    assert calls[-1] == (report.pages, report.images) == (2, 3)
    assert calls == sorted(calls)  # never goes backwards
    assert len(site.user_agents) == len(site.request_times) == 6
    assert all(ua == DEFAULT_USER_AGENT for ua in site.user_agents)
    assert DEFAULT_USER_AGENT.startswith("retrieval/")

    crawl(site.url("/"), tmp_path / "ua", replace(CONFIG, user_agent="retrieval-test/9 (me)"))
    assert site.user_agents[-1] == "retrieval-test/9 (me)"


def test_crawl_works_when_called_from_a_running_event_loop(site, tmp_path):
    site.image("/a.png", make_image(1))
    site.page("/", '<img src="/a.png">')

    async def main() -> CrawlReport:
        return crawl(site.url("/"), tmp_path, CONFIG)

    assert asyncio.run(main()).images == 1


# --------------------------------------------------------------------------
# Start URL and configuration errors


@pytest.mark.parametrize(
    "start", ["ftp://example.com/", "http://", "example.com/index.html", "", "mailto:a@b.c", None]
)
def test_bad_start_urls_raise_input_error(start, tmp_path):
    with pytest.raises(InputError, match="URL"):
        crawl(start, tmp_path)


@pytest.mark.parametrize("setup, needle", [
    (lambda s: None, "HTTP 404"),
    (lambda s: s.image("/", make_image(1)), "not an HTML page"),
    (route("/robots.txt", Resp(b"User-agent: *\nDisallow: /\n", "text/plain")),
     "disallowed by robots.txt"),
])
def test_start_page_failures_raise_fetch_error_naming_it(site, tmp_path, setup, needle):
    setup(site)
    with pytest.raises(FetchError, match=needle) as info:
        crawl(site.url("/"), tmp_path, CONFIG)
    assert site.url("/") in str(info.value)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_unreachable_start_page_raises_fetch_error(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.warns(RetrievalWarning), pytest.raises(FetchError, match="127.0.0.1") as info:
        crawl(url, tmp_path, CONFIG)
    assert url in str(info.value)


def test_start_page_redirect_to_another_host_is_followed(site, other_site, tmp_path):
    site.redirect("/", other_site.url("/home.html"), status=301)
    other_site.page("/home.html", '<a href="/more.html">m</a><img src="/h.png">')
    other_site.page("/more.html", '<img src="/m.png">')
    other_site.image("/h.png", make_image(1))
    other_site.image("/m.png", make_image(2))

    report = crawl(site.url("/"), tmp_path, CONFIG)

    # The site moved: its new host is crawled like the start host.
    assert report.pages == 2 and report.images == 2


@pytest.mark.parametrize("changes", [
    {"concurrency": 0}, {"max_pages": 0}, {"timeout": 0}, {"max_depth": -1},
    {"max_bytes": "big"}, {"max_redirects": True}, {"user_agent": " "},
    {"retries": -1}, {"backoff": -0.5}, {"max_retry_wait": "long"},
])
def test_invalid_config_raises_input_error(changes):
    with pytest.raises(InputError, match=next(iter(changes))):
        CrawlConfig(**changes)


def test_allow_hosts_accepts_a_single_string():
    assert CrawlConfig(allow_hosts="cdn.example.com").allow_hosts == ("cdn.example.com",)


# --------------------------------------------------------------------------
# fetch_image_bytes


def test_fetch_image_bytes_returns_the_body(site):
    data = make_image(5, "JPEG")
    site.image("/photo.jpg", data, "image/jpeg")
    site.redirect("/go", "/photo.jpg")
    assert fetch_image_bytes(site.url("/photo.jpg")) == data
    assert fetch_image_bytes(site.url("/go"), timeout=2) == data
    assert site.user_agents[-1] == DEFAULT_USER_AGENT


PADDED = make_image(1) + b"\0" * 5000  # a real PNG header, over the 4000-byte cap

FAILURES: dict[str, tuple[Callable[[Site], None], str]] = {
    "404": (lambda s: None, "HTTP 404"),
    "500": (route("/x", Resp(b"", "image/png", status=500)), "HTTP 500"),
    "html": (lambda s: s.page("/x", "<p>hi</p>"), "text/html is not image/*"),
    "not-image": (lambda s: s.image("/x", b"GIF00 nope"), "not a supported image"),
    "declared-too-large": (lambda s: s.image("/x", PADDED), "Content-Length"),
    "streamed-too-large": (
        route("/x", Resp(PADDED, "image/png", send_length=False)), "exceeds max_bytes"
    ),
    "stall": (route("/x", Resp(make_image(1), "image/png", stall=10)), "timed out"),
    "loop": (lambda s: (s.redirect("/x", "/y"), s.redirect("/y", "/x")), "redirect loop"),
    "too-many": (
        lambda s: [s.redirect(p, p + "x") for p in ("/x", "/xx", "/xxx")], "too many redirects"
    ),
}


@pytest.mark.parametrize("name", FAILURES)
def test_fetch_image_bytes_failures_raise_fetch_error_naming_the_url(site, name):
    setup, needle = FAILURES[name]
    setup(site)
    url = site.url("/x")
    with pytest.raises(FetchError, match=needle) as info:
        fetch_image_bytes(url, max_bytes=4000, timeout=0.5, max_redirects=2)
    assert url in str(info.value)


def test_fetch_image_bytes_connection_refused_and_bad_urls():
    url = f"http://127.0.0.1:{closed_port()}/x.png"
    with pytest.raises(FetchError, match="connection failed") as info:
        fetch_image_bytes(url, timeout=1)
    assert url in str(info.value)
    for bad in ("file:///etc/passwd", "x.png", "http://"):
        with pytest.raises(InputError, match="Image URL"):
            fetch_image_bytes(bad)
