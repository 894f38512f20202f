"""A polite, bounded HTTP image crawler built on httpx and asyncio.

:func:`crawl` starts at one HTML page, follows ``<a href>`` links breadth-first
and saves every image it finds into a folder, next to a ``manifest.jsonl``
that records where each image came from. :func:`fetch_image_bytes` fetches a
single image URL with the same guards, for "query by image URL".

Scope rules:

* Pages are followed only on the start host (the host name of the start URL,
  plus the host the start page finally redirected to) and on the hosts named in
  :attr:`CrawlConfig.allow_hosts`. Hosts are compared by name, so another port
  on the same host counts as the same site.
* Images referenced by an allowed page are fetched from *any* host, because
  sites commonly serve their images from a CDN. Pages on other hosts are never
  fetched, and links found on them are never seen.
* Images are ``<img src>``, every candidate of ``<img srcset>`` and of
  ``<picture><source srcset>``, and ``<a href>`` links whose path ends in an
  image extension. ``javascript:``, ``mailto:``, ``data:``, ``tel:`` and any
  other non-HTTP URL are ignored, and fragments are dropped.

Politeness and guards:

* ``robots.txt`` is read once per origin (RFC 9309 semantics: a 4xx means
  "no rules", a 5xx or a network error means "disallow everything") and its
  ``Disallow`` rules apply to pages *and* images; ``Crawl-delay`` sets a minimum
  interval between the starts of two requests to that origin.
* At most ``concurrency`` requests are in flight at any time. Every request has
  a deadline of ``timeout`` seconds for connect, headers and body together, so
  a server that drips bytes cannot hold a slot forever.
* Bodies are streamed and abandoned once they pass ``max_bytes`` (and refused
  up front when ``Content-Length`` already says so). Pages must be served as
  ``text/html``; images as ``image/*`` *and* start with the magic bytes of a
  supported format. At most ``max_redirects`` redirects are followed, and a
  redirect loop is reported as such.
* Every failure is recorded in :attr:`CrawlReport.skipped` as ``(url, reason)``
  and the crawl goes on. Only a bad start URL (:class:`InputError`), a start
  page that cannot be fetched (:class:`FetchError`) or an output folder that
  cannot be written (:class:`RetrievalError`) stop it.

Output: each distinct image body (by SHA-256) is written once as
``<sha256[:16]>.<ext>`` and gets one ``manifest.jsonl`` line with ``file``,
``url`` (as referenced), ``page_url``, ``alt``, ``sha256``, ``bytes``,
``width``, ``height`` (``None`` when Pillow cannot read them), ``content_type``,
``fetched_at`` (UTC, ISO 8601) and, after a redirect, ``final_url``. The line
is appended only after the file has been renamed into place, so an interrupted
crawl leaves a consistent folder, and the next run over the same folder
resumes: image URLs and SHA-256s already in the manifest are not saved again.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import heapq
import io
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from .._lazy import LazyModule

# CrawlConfig lives with the other defaults (the CLI reads them without importing the crawler).
from ..config import CRAWL_MAX_BYTES, DEFAULT_USER_AGENT, CrawlConfig
from ..errors import FetchError, InputError, RetrievalError, RetrievalWarning

#: Loaded by the first crawl, not by ``retrieval --help`` (whose crawl options read CrawlConfig).
httpx = LazyModule("httpx")
Image = LazyModule("PIL.Image")

__all__ = [
    "DEFAULT_USER_AGENT",
    "MANIFEST_NAME",
    "CrawlConfig",
    "CrawlReport",
    "crawl",
    "fetch_image_bytes",
]


MANIFEST_NAME = "manifest.jsonl"
"""File name of the manifest :func:`crawl` appends to inside ``out_dir``."""

_ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB.
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
)
_FILE_EXTENSIONS = {
    "jpeg": "jpg", "png": "png", "gif": "gif", "webp": "webp", "bmp": "bmp",
    "tiff": "tiff",
}
_PAGE_ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"
_IMAGE_ACCEPT = "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8"

_Kind = Literal["page", "image", "robots"]


# --------------------------------------------------------------------------
# Public data types


@dataclass
class CrawlReport:
    """What a crawl did.

    Attributes:
        pages: HTML pages fetched and parsed.
        images: Images saved to ``out_dir`` by this run.
        duplicates: Images fetched whose body had already been saved by this
            run under another URL.
        skipped: ``(url, reason)`` for every page or image that failed.
        already_had: Images not saved because the manifest of an earlier run
            already lists their URL (not refetched) or their SHA-256.
        seconds: Wall-clock duration of the crawl.
        max_in_flight: Largest number of simultaneous requests observed.
    """

    pages: int = 0
    images: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    already_had: int = 0
    seconds: float = 0.0
    max_in_flight: int = 0


# --------------------------------------------------------------------------
# URL and HTML helpers


def _normalize_url(raw: str, base: str | None = None) -> str | None:
    """Return ``raw`` as an absolute http(s) URL without fragment, or ``None``."""
    # Browsers strip surrounding whitespace and drop tabs/newlines inside URLs.
    raw = raw.strip().replace("\t", "").replace("\n", "").replace("\r", "")
    if not raw:
        return None
    try:
        url = urljoin(base, raw) if base else raw
        url = urldefrag(url).url
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:  # bad port, bad IPv6 literal, ...
        return None
    if scheme not in ("http", "https") or not host:
        return None
    default_port = 80 if scheme == "http" else 443
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port:
        netloc = f"{netloc}:{port}"
    if parts.username or parts.password:
        # Credentials in links are rare and must stay exactly as written.
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def _looks_like_image(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(_IMAGE_EXTENSIONS)


def _parse_srcset(value: str) -> list[str]:
    """Return the candidate URLs of a ``srcset`` attribute, in order.

    Follows the HTML "parse a srcset attribute" algorithm closely enough that
    URLs containing commas (``img,1.png 2x``) and descriptors with
    parentheses survive.
    """
    urls: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        if i >= n:
            break
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url = value[start:i]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0
            while i < n:
                char = value[i]
                i += 1
                if char == "(":
                    depth += 1
                elif char == ")" and depth:
                    depth -= 1
                elif char == "," and not depth:
                    break
        if url:
            urls.append(url)
    return urls


def _crawl_delay(robots_txt: str, user_agent: str) -> float:
    """Return the ``Crawl-delay`` of the group that applies to ``user_agent``.

    urllib.robotparser reads only whole seconds, yet ``Crawl-delay: 0.5`` is
    common, so the value is read here, choosing the group the way
    ``RobotFileParser.can_fetch`` does: the first group naming a token of our
    product name, else the first ``*`` group.
    """
    token = user_agent.split("/")[0].lower()
    groups: list[tuple[list[str], float | None]] = []
    agents: list[str] = []
    delay: float | None = None
    in_rules = False
    for line in robots_txt.splitlines():
        line = line.split("#", 1)[0].strip()
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == "user-agent":
            if in_rules:  # a user-agent after rules starts a new group
                groups.append((agents, delay))
                agents, delay, in_rules = [], None, False
            agents.append(value.lower())
        elif agents:
            in_rules = True
            if name == "crawl-delay":
                try:
                    delay = float(value)
                except ValueError:
                    pass
    if agents:
        groups.append((agents, delay))
    specific = [d for a, d in groups if any(x != "*" and x in token for x in a)]
    default = [d for a, d in groups if "*" in a]
    for candidates in (specific, default):
        if candidates:
            value = candidates[0]
            return value if value is not None and math.isfinite(value) and value > 0 else 0.0
    return 0.0


class _LinkParser(HTMLParser):
    """Collects raw link and image references from one HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href: str | None = None
        self.links: list[str] = []
        self.images: list[tuple[str, str]] = []  # (raw url, alt)
        self._picture_depth = 0
        # <source> precedes the <img> that carries the alt text of a <picture>.
        self._picture_sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values: dict[str, str] = {}
        for name, value in attrs:
            # HTML keeps the first of duplicated attributes.
            if value is not None:
                values.setdefault(name, value)
        if tag == "base":
            if self.base_href is None and "href" in values:
                self.base_href = values["href"]
        elif tag in ("a", "area"):
            if "href" in values:
                self.links.append(values["href"])
        elif tag == "picture":
            self._picture_depth += 1
        elif tag == "source":
            if self._picture_depth and "srcset" in values:
                self._picture_sources.extend(_parse_srcset(values["srcset"]))
        elif tag == "img":
            alt = " ".join(values.get("alt", "").split())
            found = []
            if "src" in values:
                found.append(values["src"])
            if "srcset" in values:
                found.extend(_parse_srcset(values["srcset"]))
            if self._picture_depth:
                found = self._picture_sources + found
                self._picture_sources = []
            self.images.extend((url, alt) for url in found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture" and self._picture_depth:
            self._picture_depth -= 1
            self._flush_sources()

    def close(self) -> None:
        super().close()
        self._flush_sources()

    def _flush_sources(self) -> None:
        self.images.extend((url, "") for url in self._picture_sources)
        self._picture_sources = []


@dataclass
class _PageRefs:
    links: list[str]
    images: list[tuple[str, str]]  # (absolute url, alt)


def _extract_refs(html: str, page_url: str) -> _PageRefs:
    """Return the absolute page links and image URLs found in ``html``."""
    parser = _LinkParser()
    with contextlib.suppress(Exception):
        # html.parser is lenient, but a partial parse beats losing the page.
        parser.feed(html)
        parser.close()
    base = page_url
    if parser.base_href:
        base = _normalize_url(parser.base_href, page_url) or page_url
    links: list[str] = []
    images: list[tuple[str, str]] = []
    for raw in parser.links:
        url = _normalize_url(raw, base)
        if url is None:
            continue
        if _looks_like_image(url):
            images.append((url, ""))
        else:
            links.append(url)
    for raw, alt in parser.images:
        url = _normalize_url(raw, base)
        if url is not None:
            images.append((url, alt))
    return _PageRefs(links, images)


# --------------------------------------------------------------------------
# Response checks shared by the async crawler and the sync fetcher


class _Skip(Exception):
    """One URL failed; ``reason`` says why in words fit for a report."""

    def __init__(self, reason: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True for network errors and timeouts, which robots.txt handling
        # must tell apart from answers the server did give.
        self.unreachable = unreachable


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _redirect_target(url: str, response: httpx.Response) -> str | None:
    """Return the absolute URL ``response`` redirects to, or ``None``."""
    if response.status_code not in _REDIRECT_CODES:
        return None
    location = response.headers.get("location")
    if not location:
        raise _Skip(f"HTTP {response.status_code} redirect without a Location header")
    target = _normalize_url(location, url)
    if target is None:
        raise _Skip(f"redirect to a non-HTTP URL {location!r}")
    return target


def _next_hop(chain: list[str], target: str, max_redirects: int) -> None:
    """Append ``target`` to the redirect ``chain`` or raise :class:`_Skip`."""
    if target in chain:
        loop = " -> ".join([*chain[chain.index(target):], target])
        raise _Skip(f"redirect loop: {loop}")
    if len(chain) > max_redirects:
        raise _Skip(f"too many redirects (more than {max_redirects})")
    chain.append(target)


def _check_headers(response: httpx.Response, kind: _Kind, max_bytes: int) -> None:
    """Refuse a final (non-redirect) response by status, type or declared size."""
    status = response.status_code
    if not 200 <= status < 300:
        phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
        raise _Skip(f"HTTP {status}{phrase}")
    media = _media_type(response)
    if kind == "page" and media not in _HTML_TYPES:
        raise _Skip(f"not an HTML page (Content-Type {media or 'missing'!s})")
    if kind == "image" and not media.startswith("image/"):
        raise _Skip(f"Content-Type {media or 'missing'!s} is not image/*")
    declared = response.headers.get("content-length", "")
    if kind != "robots" and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _Skip(
            f"too large: Content-Length {int(declared)} bytes exceeds "
            f"max_bytes {max_bytes}"
        )


def _check_image_body(body: bytes) -> str:
    """Return the sniffed image format of ``body`` or raise :class:`_Skip`."""
    from .images import sniff_image_type  # NumPy and Pillow: loaded by the first crawl

    kind = sniff_image_type(body[:64])
    if kind is None:
        raise _Skip(
            f"body is not a supported image (first bytes {body[:8]!r})"
        )
    return kind


def _too_large(max_bytes: int) -> _Skip:
    return _Skip(f"too large: body exceeds max_bytes {max_bytes}")


def _with_hop(reason: str, url: str, hop: str) -> str:
    return reason if hop == url else f"{reason} (after redirect to {hop})"


def _describe_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException)):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, httpx.InvalidURL):
        return f"invalid URL ({exc})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed ({str(exc) or type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"network error: {type(exc).__name__} ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _check_start_url(start_url: object) -> str:
    if not isinstance(start_url, str):
        raise InputError(f"Start URL must be a string, got {start_url!r}")
    url = _normalize_url(start_url)
    if url is None:
        raise InputError(
            f"Start URL {start_url!r} is not usable: give an absolute http:// or "
            "https:// URL with a host name, e.g. https://example.com/"
        )
    return url


# --------------------------------------------------------------------------
# Synchronous single-image fetch


def fetch_image_bytes(
    url: str,
    *,
    max_bytes: int = CRAWL_MAX_BYTES,
    timeout: float = 10.0,
    max_redirects: int = 5,
    user_agent: str = DEFAULT_USER_AGENT,
) -> bytes:
    """Download one image, with the same guards as the crawler.

    robots.txt is not consulted: this is a single fetch the user asked for, as
    a browser would make it.

    Args:
        url: Absolute http:// or https:// URL of the image.
        max_bytes: Largest accepted body; larger responses are abandoned.
        timeout: Seconds allowed per request (connect, headers and body).
        max_redirects: Redirects followed before giving up.
        user_agent: ``User-Agent`` header to send.

    Returns:
        The image body, whose magic bytes name a supported format.

    Raises:
        InputError: ``url`` is not an absolute http(s) URL.
        FetchError: On a network error or timeout, an HTTP error status, a
            redirect loop or too many redirects, a body over ``max_bytes``, a
            ``Content-Type`` that is not ``image/*``, or a body that is not a
            supported image. The message names ``url``.
    """
    start = _normalize_url(url) if isinstance(url, str) else None
    if start is None:
        raise InputError(
            f"Image URL {url!r} is not usable: give an absolute http:// or https:// URL"
        )
    headers = {"User-Agent": user_agent, "Accept": _IMAGE_ACCEPT}
    chain = [start]
    hop = start
    try:
        with httpx.Client(
            headers=headers, timeout=timeout, follow_redirects=False
        ) as client:
            while True:
                deadline = time.monotonic() + timeout
                with client.stream("GET", hop) as response:
                    target = _redirect_target(hop, response)
                    if target is not None:
                        _next_hop(chain, target, max_redirects)
                        hop = target
                        continue
                    _check_headers(response, "image", max_bytes)
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise _too_large(max_bytes)
                        # httpx only bounds each read; this bounds the sum.
                        if time.monotonic() > deadline:
                            raise TimeoutError
                _check_image_body(bytes(body))
                return bytes(body)
    except _Skip as exc:
        reason = _with_hop(exc.reason, start, hop)
    except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, ValueError) as exc:
        reason = _with_hop(_describe_error(exc, timeout), start, hop)
    raise FetchError(f"Cannot fetch image {url}: {reason}")


# --------------------------------------------------------------------------
# Manifest


def _read_manifest(path: Path) -> tuple[set[str], set[str], bool]:
    """Return (urls, sha256s, ends_with_newline) of an existing manifest."""
    urls: set[str] = set()
    shas: set[str] = set()
    if not path.exists():
        return urls, shas, True
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RetrievalError(f"Cannot read manifest {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            # The usual cause is a crawl killed mid-write; the image is refetched.
            warnings.warn(
                f"{path}:{number}: ignoring unreadable manifest line",
                RetrievalWarning,
                stacklevel=2,
            )
            continue
        if isinstance(entry.get("url"), str):
            urls.add(_normalize_url(entry["url"]) or entry["url"])
        if isinstance(entry.get("sha256"), str):
            shas.add(entry["sha256"])
    return urls, shas, text == "" or text.endswith("\n")


def _write_image(out_dir: Path, name: str, body: bytes) -> tuple[int | None, int | None]:
    """Atomically write ``body`` to ``out_dir/name``; return its pixel size."""
    fd, tmp = tempfile.mkstemp(prefix=".crawl-", suffix=".part", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, out_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
        return int(width), int(height)
    except Exception:  # a sniffed-but-broken file still belongs in the corpus
        return None, None


# --------------------------------------------------------------------------
# The crawler


@dataclass
class _Page:
    url: str  # final URL after redirects
    html: str


@dataclass
class _Image:
    url: str  # final URL after redirects
    body: bytes
    content_type: str
    format: str


class _Crawler:
    """State of one crawl; every method runs on one event loop."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        out_dir: Path,
        config: CrawlConfig,
        on_progress: Callable[[int, int], None] | None,
    ) -> None:
        self.client = client
        self.out_dir = out_dir
        self.config = config
        self.on_progress = on_progress
        self.report = CrawlReport()
        self.semaphore = asyncio.Semaphore(config.concurrency)
        self.in_flight = 0
        self.robots: dict[str, asyncio.Future[RobotFileParser | None]] = {}
        self.robots_errors: dict[str, str] = {}  # origin -> why all is disallowed
        self.crawl_delays: dict[str, float] = {}
        self.host_locks: dict[str, asyncio.Lock] = {}
        self.last_start: dict[str, float] = {}
        self.allowed_hosts: set[str] = set()
        for entry in config.allow_hosts:
            entry = entry.strip().lower()
            if "://" in entry:
                entry = urlsplit(entry).netloc
            if entry:
                self.allowed_hosts.add(entry)
        self.seen_pages: set[str] = set()
        self.crawled_pages: set[str] = set()
        self.seen_images: set[str] = set()
        self.saved_shas: set[str] = set()
        self.had_urls: set[str] = set()
        self.had_shas: set[str] = set()
        self.manifest: io.TextIOWrapper | None = None

    # -- politeness -------------------------------------------------------

    def _host_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.hostname or "") in self.allowed_hosts or (
            parts.netloc.rpartition("@")[2] in self.allowed_hosts
        )

    async def _robots_for(self, origin: str) -> RobotFileParser | None:
        """Return the parsed robots.txt of ``origin``, fetching it only once."""
        future = self.robots.get(origin)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.robots[origin] = future
            try:
                future.set_result(await self._load_robots(origin))
            except BaseException:
                # Waiters get a skip rather than the cancellation of this task.
                future.set_exception(_Skip("robots.txt could not be read"))
                future.exception()  # mark retrieved: no "never retrieved" log
                raise
        return await asyncio.shield(future)

    async def _load_robots(self, origin: str) -> RobotFileParser | None:
        url = f"{origin}/robots.txt"
        parser = RobotFileParser(url)
        try:
            _, response, body = await self._get(url, "robots")
        except _Skip as exc:
            if not exc.unreachable:
                return None  # RFC 9309: bad redirects count as "unavailable": no rules
            reason = exc.reason
        else:
            if 200 <= response.status_code < 300:
                text = body.decode("utf-8", errors="replace")
                parser.parse(text.splitlines())
                # can_fetch() refuses everything until a fetch time is recorded.
                parser.modified()
                self.crawl_delays[origin] = _crawl_delay(text, self.config.user_agent)
                return parser
            if response.status_code < 500:
                return None  # 4xx (and odd statuses): the site has no rules
            reason = f"HTTP {response.status_code}"
        warnings.warn(
            f"{url}: robots.txt unavailable ({reason}); not crawling {origin}",
            RetrievalWarning,
            stacklevel=2,
        )
        parser.disallow_all = True
        self.robots_errors[origin] = f"robots.txt unavailable ({reason})"
        return parser

    @contextlib.asynccontextmanager
    async def _request_slot(self, origin: str, delay: float) -> AsyncIterator[None]:
        """Hold one of ``concurrency`` request slots, honouring Crawl-delay."""
        loop = asyncio.get_running_loop()
        if delay > 0:
            lock = self.host_locks.setdefault(origin, asyncio.Lock())
            # The slot is taken while holding the host lock so request starts on
            # this host stay ``delay`` apart, while other hosts are not blocked.
            async with lock:
                wait = self.last_start.get(origin, -math.inf) + delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.semaphore.acquire()
                self.last_start[origin] = loop.time()
        else:
            await self.semaphore.acquire()
        self.in_flight += 1
        self.report.max_in_flight = max(self.report.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.semaphore.release()

    # -- fetching ---------------------------------------------------------

    async def _get(
        self, url: str, kind: _Kind, *, any_host: bool = False
    ) -> tuple[str, httpx.Response, bytes]:
        """Fetch ``url`` following redirects; return (final url, response, body).

        Raises:
            _Skip: For every failure, with the reason to report.
        """
        config = self.config
        chain = [url]
        hop = url
        try:
            while True:
                delay = 0.0
                if kind != "robots" and config.respect_robots:
                    origin = _origin(hop)
                    robots = await self._robots_for(origin)
                    if robots is not None:
                        if not robots.can_fetch(config.user_agent, hop):
                            raise _Skip(
                                self.robots_errors.get(origin, "disallowed by robots.txt")
                            )
                        delay = self.crawl_delays.get(origin, 0.0)
                async with self._request_slot(_origin(hop), delay):
                    target, response, body = await asyncio.wait_for(
                        self._get_one(hop, kind), config.timeout
                    )
                if target is None:
                    return hop, response, body
                _next_hop(chain, target, config.max_redirects)
                if kind == "page" and not any_host and not self._host_allowed(target):
                    raise _Skip(f"redirected off-site to {target}")
                hop = target
        except _Skip as exc:
            raise _Skip(
                _with_hop(exc.reason, url, hop), unreachable=exc.unreachable
            ) from None
        except (asyncio.TimeoutError, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            reason = _with_hop(_describe_error(exc, config.timeout), url, hop)
            raise _Skip(reason, unreachable=True) from None

    async def _get_one(
        self, url: str, kind: _Kind
    ) -> tuple[str | None, httpx.Response, bytes]:
        """One request: (redirect target or None, response, body)."""
        accept = _IMAGE_ACCEPT if kind == "image" else _PAGE_ACCEPT
        if kind == "robots":
            accept = "text/plain,*/*;q=0.5"
        limit = _ROBOTS_MAX_BYTES if kind == "robots" else self.config.max_bytes
        async with self.client.stream("GET", url, headers={"Accept": accept}) as response:
            target = _redirect_target(url, response)
            if target is not None:
                return target, response, b""
            if kind == "robots":
                if not 200 <= response.status_code < 300:
                    return None, response, b""
            else:
                _check_headers(response, kind, limit)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    if kind == "robots":
                        # Rules past the limit are ignored, as RFC 9309 allows.
                        del body[limit:]
                        break
                    raise _too_large(limit)
            return None, response, bytes(body)

    async def fetch_page(self, url: str, *, start: bool = False) -> _Page:
        final, response, body = await self._get(url, "page", any_host=start)
        encoding = response.charset_encoding or "utf-8"
        try:
            html = body.decode(encoding, errors="replace")
        except LookupError:  # an unknown charset name in the header
            html = body.decode("utf-8", errors="replace")
        return _Page(final, html)

    async def fetch_image(self, url: str) -> _Image:
        final, response, body = await self._get(url, "image")
        return _Image(final, body, _media_type(response), _check_image_body(body))

    # -- tasks -------------------------------------------------------------

    async def image_task(self, url: str, page_url: str, alt: str) -> str:
        """Fetch and save one image; return "saved", "duplicate" or "had"."""
        image = await self.fetch_image(url)
        sha = hashlib.sha256(image.body).hexdigest()
        if sha in self.had_shas:
            return "had"
        if sha in self.saved_shas:
            return "duplicate"
        # Claimed before the first await so a twin finishing meanwhile is a duplicate.
        self.saved_shas.add(sha)
        name = f"{sha[:16]}.{_FILE_EXTENSIONS.get(image.format, image.format)}"
        try:
            width, height = await asyncio.to_thread(
                _write_image, self.out_dir, name, image.body
            )
        except OSError as exc:
            self.saved_shas.discard(sha)
            raise RetrievalError(f"Cannot write image {self.out_dir / name}: {exc}") from exc
        entry = {
            "file": name,
            "url": url,
            "page_url": page_url,
            "alt": alt,
            "sha256": sha,
            "bytes": len(image.body),
            "width": width,
            "height": height,
            "content_type": image.content_type,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if image.url != url:
            entry["final_url"] = image.url
        self._append_manifest(entry)
        return "saved"

    def _append_manifest(self, entry: dict) -> None:
        assert self.manifest is not None
        try:
            self.manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.manifest.flush()
        except OSError as exc:
            raise RetrievalError(
                f"Cannot write manifest {self.out_dir / MANIFEST_NAME}: {exc}"
            ) from exc

    # -- scheduling --------------------------------------------------------

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.report.pages, self.report.images)

    async def run(self, start_url: str) -> CrawlReport:
        config = self.config
        report = self.report
        manifest_path = self.out_dir / MANIFEST_NAME
        self.had_urls, self.had_shas, newline_ok = _read_manifest(manifest_path)

        self.allowed_hosts.add(urlsplit(start_url).hostname or "")
        self.seen_pages.add(start_url)
        try:
            start = await self.fetch_page(start_url, start=True)
        except _Skip as exc:
            raise FetchError(f"Cannot crawl start page {start_url}: {exc.reason}") from None
        # A site that redirects example.com -> www.example.com is still one site.
        self.allowed_hosts.add(urlsplit(start.url).hostname or "")

        try:
            self.manifest = open(manifest_path, "a", encoding="utf-8")
            if not newline_ok:  # finish a line cut short by an interrupted run
                self.manifest.write("\n")
        except OSError as exc:
            raise RetrievalError(f"Cannot write manifest {manifest_path}: {exc}") from exc

        pending_pages: list[tuple[int, int, str]] = []  # heap of (depth, seq, url)
        pending_images: list[tuple[str, str, str]] = []  # (url, page_url, alt), FIFO
        image_cursor = 0
        sequence = 0

        def accept(page: _Page, depth: int) -> None:
            nonlocal sequence
            if page.url in self.crawled_pages:
                return  # two links redirected to one page
            self.crawled_pages.add(page.url)
            self.seen_pages.add(page.url)
            report.pages += 1
            refs = _extract_refs(page.html, page.url)
            if depth < config.max_depth:
                for link in refs.links:
                    if link not in self.seen_pages and self._host_allowed(link):
                        self.seen_pages.add(link)
                        heapq.heappush(pending_pages, (depth + 1, sequence, link))
                        sequence += 1
            for url, alt in refs.images:
                if url in self.seen_images:
                    continue
                self.seen_images.add(url)
                if url in self.had_urls:
                    report.already_had += 1
                else:
                    pending_images.append((url, page.url, alt))

        accept(start, 0)
        self._progress()

        # Tasks beyond ``concurrency`` only wait (robots.txt, Crawl-delay, the
        # semaphore); having some ready keeps every request slot busy.
        max_tasks = config.concurrency * 4
        running: dict[asyncio.Task, tuple[str, str, int]] = {}
        pages_running = images_running = 0
        try:
            while True:
                while len(running) < max_tasks:
                    images_open = report.images + images_running < config.max_images
                    if image_cursor < len(pending_images) and images_open:
                        url, page_url, alt = pending_images[image_cursor]
                        image_cursor += 1
                        task = asyncio.ensure_future(self.image_task(url, page_url, alt))
                        running[task] = ("image", url, 0)
                        images_running += 1
                    elif (
                        pending_pages
                        and images_open
                        and report.pages + pages_running < config.max_pages
                    ):
                        depth, _, url = heapq.heappop(pending_pages)
                        task = asyncio.ensure_future(self.fetch_page(url))
                        running[task] = ("page", url, depth)
                        pages_running += 1
                    else:
                        break
                if image_cursor > 4096:  # drop the consumed head of the FIFO
                    del pending_images[:image_cursor]
                    image_cursor = 0
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    kind, url, depth = running.pop(task)
                    if kind == "page":
                        pages_running -= 1
                    else:
                        images_running -= 1
                    try:
                        result = task.result()
                    except _Skip as exc:
                        report.skipped.append((url, exc.reason))
                        continue
                    except RetrievalError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - one URL must not end the crawl
                        report.skipped.append(
                            (url, f"unexpected error: {type(exc).__name__}: {exc}")
                        )
                        continue
                    if kind == "page":
                        accept(result, depth)
                    elif result == "saved":
                        report.images += 1
                    elif result == "duplicate":
                        report.duplicates += 1
                    else:
                        report.already_had += 1
                    self._progress()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            self.manifest.close()
        return report


async def _crawl_async(
    start_url: str,
    out_dir: Path,
    config: CrawlConfig,
    on_progress: Callable[[int, int], None] | None,
) -> CrawlReport:
    started = time.monotonic()
    # Requests are already bounded by the semaphore; a pool no larger than that
    # keeps httpcore's per-request scan of its connections short.
    limits = httpx.Limits(
        max_connections=config.concurrency,
        max_keepalive_connections=config.concurrency,
    )
    async with httpx.AsyncClient(
        headers={"User-Agent": config.user_agent},
        timeout=config.timeout,
        follow_redirects=False,
        limits=limits,
    ) as client:
        crawler = _Crawler(client, out_dir, config, on_progress)
        report = await crawler.run(start_url)
    report.seconds = time.monotonic() - started
    return report


def crawl(
    start_url: str,
    out_dir: Path,
    config: CrawlConfig = CrawlConfig(),
    on_progress: Callable[[int, int], None] | None = None,
) -> CrawlReport:
    """Crawl a site from ``start_url`` and save its images into ``out_dir``.

    See the module documentation for the scope, politeness and output rules.
    Running again over the same ``out_dir`` resumes: images whose URL or
    SHA-256 the manifest already lists are counted in
    :attr:`CrawlReport.already_had` instead of being saved again.

    Args:
        start_url: Absolute http:// or https:// URL of the first HTML page.
        out_dir: Folder for the images and ``manifest.jsonl``; created if needed.
        config: Limits and politeness settings.
        on_progress: Called as ``on_progress(pages_done, images_saved)`` after
            the start page and after each page or image finishes. An exception
            it raises stops the crawl (the folder stays consistent).

    Returns:
        What the crawl did, including every skipped URL with its reason.

    Raises:
        InputError: ``start_url`` is not an absolute http(s) URL with a host,
            or ``out_dir`` is not a folder.
        FetchError: The start page cannot be fetched (network error, HTTP
            error, not HTML, disallowed by robots.txt, ...).
        RetrievalError: ``out_dir`` or its manifest cannot be written.
    """
    url = _check_start_url(start_url)
    if not isinstance(config, CrawlConfig):
        raise InputError(f"config must be a CrawlConfig, got {type(config).__name__}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"Output folder {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RetrievalError(f"Cannot create output folder {out_dir}: {exc}") from exc

    coroutine = _crawl_async(url, out_dir, config, on_progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from async code (a notebook, a web handler): asyncio.run() cannot
    # nest, so the crawl gets its own loop on a worker thread, which is then
    # also the thread on_progress runs on.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
