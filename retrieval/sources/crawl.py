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

* ``robots.txt`` is read once per origin with Protego (RFC 9309 semantics:
  ``*`` and ``$`` patterns, the longest matching rule wins, the group is chosen
  by our product token ``retrieval``; a 4xx means "no rules", a 5xx or a
  network error means "disallow everything") and its rules apply to pages
  *and* images; ``Crawl-delay`` (fractions of a second too) sets a minimum
  interval between the starts of two requests to that origin.
* An HTTP 429 or 503 answer is retried up to ``retries`` times, after
  ``Retry-After`` (seconds or an HTTP date) or else an exponential backoff,
  and the whole host pauses meanwhile; ``max_retry_wait`` caps the pause per
  host. A timeout or a connection cut mid-answer is retried once.
* At most ``concurrency`` requests are in flight at any time. Every request has
  a deadline of ``timeout`` seconds for connect, headers and body together, so
  a server that drips bytes cannot hold a slot forever.
* Bodies are streamed and abandoned once they pass ``max_bytes`` (and refused
  up front when ``Content-Length`` already says so). Pages must be served as
  ``text/html``; images as ``image/*`` *and* start with the magic bytes of a
  supported format. At most ``max_redirects`` redirects are followed, and a
  redirect loop is reported as such.
* Every failure is recorded in :attr:`CrawlReport.skipped` as ``(url, reason)``
  and counted by kind in :attr:`CrawlReport.skip_reasons`, and the crawl goes
  on. Only a bad start URL (:class:`InputError`), a start page that cannot be
  fetched (:class:`FetchError`) or an output folder that cannot be written
  (:class:`RetrievalError`) stop it.
* Links that ``max_depth``, ``max_pages`` or ``max_images`` left unfollowed
  are counted in :attr:`CrawlReport.unfollowed`.

Output: each distinct image body (by SHA-256) is written once as
``<sha256[:16]>.<ext>`` and gets one ``manifest.jsonl`` line with ``file``,
``url`` (as referenced), ``page_url``, ``alt``, ``sha256``, ``bytes``,
``width``, ``height`` (``None`` when Pillow cannot read them), ``content_type``,
``fetched_at`` (UTC, ISO 8601) and, after a redirect, ``final_url``. The line
is appended only after the file has been renamed into place, so an interrupted
crawl leaves a consistent folder, and the next run over the same folder
resumes: image URLs and SHA-256s already in the manifest are not saved again.
Each finished run appends its :meth:`CrawlReport.summary` (counts, skip reasons,
unfollowed links, limits) as one line of ``crawls.jsonl`` beside it.

Pages are decoded in the HTML standard's order: a byte order mark, the
``charset`` of the ``Content-Type`` header, a ``<meta charset>`` or
``<meta http-equiv="Content-Type">`` in the first 2 KB, then UTF-8 if the
bytes are valid UTF-8, else charset-normalizer's guess. Unknown charset names
are passed over, never fatal.
"""
from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import email.utils
import hashlib
import heapq
import io
import json
import math
import os
import re
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

from .._lazy import LazyModule

# CrawlConfig lives with the other defaults (the CLI reads them without importing the crawler).
from ..config import CRAWL_MAX_BYTES, DEFAULT_USER_AGENT, CrawlConfig
from ..errors import FetchError, InputError, RetrievalError, RetrievalWarning
from .files import json_line

#: Loaded by the first crawl, not by ``retrieval --help`` (whose crawl options read CrawlConfig).
httpx = LazyModule("httpx")
Image = LazyModule("PIL.Image")
protego = LazyModule("protego")
charset_normalizer = LazyModule("charset_normalizer")

__all__ = [
    "DEFAULT_USER_AGENT",
    "MANIFEST_NAME",
    "RUNS_NAME",
    "CrawlConfig",
    "CrawlReport",
    "crawl",
    "fetch_image_bytes",
]


MANIFEST_NAME = "manifest.jsonl"
"""File name of the manifest :func:`crawl` appends to inside ``out_dir``."""

RUNS_NAME = "crawls.jsonl"
"""File in ``out_dir`` to which each finished crawl appends its summary line."""

_ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309 asks crawlers to parse at least 500 KiB.
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_RETRY_CODES = frozenset({429, 503})  # "too many requests", "try again later"
# The HTML standard's <meta> prescan reads 1024 bytes; pages with a long
# <head> preamble still declare within twice that.
_META_PRESCAN = 2048
# Enough text for charset-normalizer to decide, without scanning megabytes.
_DETECT_BYTES = 16 * 1024
# How much messier (charset-normalizer's chaos) windows-1252 may read than the
# detected Latin code page and still be preferred (see _detect_codec).
_WESTERN_MARGIN = 0.1
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
        skip_reasons: How many skips had each kind of reason: ``robots``
            (disallowed), ``robots_unavailable``, ``http_<status>`` (e.g.
            ``http_404``), ``timeout``, ``network``, ``too_large``,
            ``not_html``, ``not_image``, ``redirect`` (loop, too many, no
            target), ``off_site`` (a page redirected to another site),
            ``invalid_url`` or ``other``.
        unfollowed: Links found but never fetched because a limit cut them,
            by limit: ``max_depth`` (distinct same-site page links beyond it),
            ``max_pages`` (pages queued when it was reached), ``max_images``
            (image and page links queued when it was reached). Limits that
            cut nothing are absent.
        limits: The ``max_depth``, ``max_pages`` and ``max_images`` of the run.
        already_had: Images not saved because the manifest of an earlier run
            already lists their URL (not refetched) or their SHA-256.
        seconds: Wall-clock duration of the crawl.
        max_in_flight: Largest number of simultaneous requests observed.
    """

    pages: int = 0
    images: int = 0
    duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skip_reasons: dict[str, int] = field(default_factory=dict)
    unfollowed: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int | None] = field(default_factory=dict)
    already_had: int = 0
    seconds: float = 0.0
    max_in_flight: int = 0

    def summary(self) -> dict:
        """Return the counts as a JSON-ready dict (``crawl --json``, ``crawls.jsonl``)."""
        reasons = sorted(self.skip_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "pages": self.pages,
            "images": self.images,
            "duplicates": self.duplicates,
            "already_had": self.already_had,
            "skipped": len(self.skipped),
            "skip_reasons": dict(reasons),
            "unfollowed": dict(self.unfollowed),
            "limits": dict(self.limits),
            "seconds": round(self.seconds, 2),
        }

    def notes(self) -> list[str]:
        """Return one line on the skip reasons and one on unfollowed links, if any."""
        lines = []
        summary = self.summary()
        if summary["skip_reasons"]:
            reasons = ", ".join(f"{kind} {n}" for kind, n in summary["skip_reasons"].items())
            lines.append(f"skipped {summary['skipped']}: {reasons}")
        if self.unfollowed:
            cuts = ", ".join(
                f"{n} {'beyond' if limit == 'max_depth' else 'over'} "
                f"--{limit.replace('_', '-')} {self.limits.get(limit)}"
                for limit, n in self.unfollowed.items()
            )
            lines.append(f"links left unfollowed: {cuts} (raise the limit to follow them)")
        return lines


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


_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([-\w.:+]+)""", re.IGNORECASE)
# Python codecs that are no web charset: text transforms and escapes that a
# hostile page could name, and UTF-7, which the Encoding Standard bans.
_NOT_WEB_CODECS = frozenset({
    "undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "utf-7",
})


def _codec(label: str | None) -> str | None:
    """Return the Python codec for a charset ``label``, or ``None`` if unusable."""
    if not label:
        return None
    try:
        info = codecs.lookup(label.strip().strip("\"'"))
    except LookupError:
        return None
    # _is_text_encoding is how bytes.decode itself refuses base64, zlib, rot13, ...
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_WEB_CODECS:
        return None
    # The Encoding Standard reads these labels as windows-1252: pages declared
    # latin-1 use its extra characters (curly quotes, dashes) in 0x80-0x9F.
    return "cp1252" if info.name in ("iso8859-1", "ascii") else info.name


def _detect_codec(body: bytes) -> str:
    """Guess the encoding of a page that declares none and is not UTF-8."""
    # The lines holding non-ASCII bytes carry the evidence; markup only dilutes
    # it. Whole lines: a line end never splits a multi-byte character.
    sample, size = [], 0
    for line in body.split(b"\n"):
        if not line.isascii():
            sample.append(line)
            size += len(line) + 1
            if size >= _DETECT_BYTES:
                break
    text = b"\n".join(sample)
    best = charset_normalizer.from_bytes(text).best()
    if best is None:
        return "cp1252"
    try:
        western = text.decode("cp1252")
    except UnicodeDecodeError:
        return best.encoding
    # charset-normalizer tells scripts apart (Cyrillic, Greek, CJK) well but
    # not the Latin code pages: it often reads French or German as Baltic or
    # Central European. windows-1252, the web's usual legacy encoding and the
    # HTML standard's fallback for most locales, wins unless it reads messier.
    from charset_normalizer.md import mess_ratio

    if mess_ratio(western, 1.0) <= best.chaos + _WESTERN_MARGIN:
        return "cp1252"
    return best.encoding


def _decode_html(body: bytes, header_charset: str | None) -> str:
    """Decode an HTML page the way the HTML standard's encoding sniffing does.

    A byte order mark comes first (the standard puts it above the HTTP header,
    which it outranks in practice: a BOM is never there by accident), then the
    header's charset, then a ``<meta>`` declaration in the first bytes, then
    UTF-8 when the bytes are valid UTF-8, else charset-normalizer's guess.
    """
    codec = None
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            codec = name
            break
    codec = codec or _codec(header_charset)
    if codec is None:
        for match in _META_CHARSET.finditer(body[:_META_PRESCAN]):
            codec = _codec(match.group(1).decode("ascii"))
            if codec is not None:
                # A <meta> readable as ASCII cannot be in UTF-16/32: the standard reads UTF-8.
                codec = "utf-8" if codec.startswith(("utf-16", "utf-32")) else codec
                break
    if codec is None:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            codec = _detect_codec(body)
    try:
        return body.decode(codec, errors="replace")
    except (LookupError, UnicodeError):  # a codec without "replace"; never fatal
        return body.decode("utf-8", errors="replace")


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
    """One URL failed; ``reason`` says why in words fit for a report.

    ``kind`` is the reason's class counted in :attr:`CrawlReport.skip_reasons`.
    """

    def __init__(self, reason: str, kind: str, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        # True for network errors and timeouts, which robots.txt handling
        # must tell apart from answers the server did give.
        self.unreachable = unreachable


def _status_reason(response: httpx.Response) -> tuple[str, str]:
    """(reason, kind) of a skip for an HTTP error status."""
    status = response.status_code
    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
    return f"HTTP {status}{phrase}", f"http_{status}"


class _Busy(_Skip):
    """An HTTP 429 or 503 answer: the server asks us to come back later."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(*_status_reason(response))
        self.response = response
        self.retry_after = _retry_after(response.headers.get("retry-after"))


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay or HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def _redirect_target(url: str, response: httpx.Response) -> str | None:
    """Return the absolute URL ``response`` redirects to, or ``None``."""
    if response.status_code not in _REDIRECT_CODES:
        return None
    location = response.headers.get("location")
    if not location:
        raise _Skip(f"HTTP {response.status_code} redirect without a Location header", "redirect")
    target = _normalize_url(location, url)
    if target is None:
        raise _Skip(f"redirect to a non-HTTP URL {location!r}", "redirect")
    return target


def _next_hop(chain: list[str], target: str, max_redirects: int) -> None:
    """Append ``target`` to the redirect ``chain`` or raise :class:`_Skip`."""
    if target in chain:
        loop = " -> ".join([*chain[chain.index(target):], target])
        raise _Skip(f"redirect loop: {loop}", "redirect")
    if len(chain) > max_redirects:
        raise _Skip(f"too many redirects (more than {max_redirects})", "redirect")
    chain.append(target)


def _check_headers(response: httpx.Response, kind: _Kind, max_bytes: int) -> None:
    """Refuse a final (non-redirect) response by status, type or declared size."""
    status = response.status_code
    if not 200 <= status < 300:
        raise _Skip(*_status_reason(response))
    media = _media_type(response)
    if kind == "page" and media not in _HTML_TYPES:
        raise _Skip(f"not an HTML page (Content-Type {media or 'missing'!s})", "not_html")
    if kind == "image" and not media.startswith("image/"):
        raise _Skip(f"Content-Type {media or 'missing'!s} is not image/*", "not_image")
    declared = response.headers.get("content-length", "")
    if kind != "robots" and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _Skip(
            f"too large: Content-Length {int(declared)} bytes exceeds "
            f"max_bytes {max_bytes}", "too_large"
        )


def _check_image_body(body: bytes) -> str:
    """Return the sniffed image format of ``body`` or raise :class:`_Skip`."""
    from .images import sniff_image_type  # NumPy and Pillow: loaded by the first crawl

    kind = sniff_image_type(body[:64])
    if kind is None:
        raise _Skip(
            f"body is not a supported image (first bytes {body[:8]!r})", "not_image"
        )
    return kind


def _too_large(max_bytes: int) -> _Skip:
    return _Skip(f"too large: body exceeds max_bytes {max_bytes}", "too_large")


def _with_hop(reason: str, url: str, hop: str) -> str:
    return reason if hop == url else f"{reason} (after redirect to {hop})"


def _describe_error(exc: BaseException, timeout: float) -> _Skip:
    """Return the skip a network-level exception stands for."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException)):
        return _Skip(f"timed out after {timeout:g} s", "timeout", unreachable=True)
    if isinstance(exc, httpx.InvalidURL):
        return _Skip(f"invalid URL ({exc})", "invalid_url", unreachable=True)
    if isinstance(exc, httpx.ConnectError):
        return _Skip(f"connection failed ({str(exc) or type(exc).__name__})", "network",
                     unreachable=True)
    if isinstance(exc, httpx.HTTPError):
        return _Skip(f"network error: {type(exc).__name__} ({exc})", "network", unreachable=True)
    return _Skip(f"{type(exc).__name__}: {exc}", "other", unreachable=True)


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
        reason = _with_hop(_describe_error(exc, timeout).reason, start, hop)
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
            entry = json_line(line)
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
        self.robots: dict[str, asyncio.Future[protego.Protego | None]] = {}
        self.robots_errors: dict[str, str] = {}  # origin -> why all is disallowed
        # robots.txt groups are matched on the product token alone: matched
        # against the whole header, "User-agent: crawler" would catch ours.
        self.robots_token = re.match(r"[^/\s]*", config.user_agent.strip()).group() or "*"
        self.host_locks: dict[str, asyncio.Lock] = {}
        self.last_start: dict[str, float] = {}
        # Retries pause a whole host (loop time it resumes), within a budget.
        self.paused_until: dict[str, float] = {}
        self.retry_budget: dict[str, float] = {}
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

    async def _robots_for(self, origin: str) -> protego.Protego | None:
        """Return the parsed robots.txt of ``origin``, fetching it only once."""
        future = self.robots.get(origin)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.robots[origin] = future
            try:
                future.set_result(await self._load_robots(origin))
            except BaseException:
                # Waiters get a skip rather than the cancellation of this task.
                future.set_exception(_Skip("robots.txt could not be read", "robots_unavailable"))
                future.exception()  # mark retrieved: no "never retrieved" log
                raise
        return await asyncio.shield(future)

    async def _load_robots(self, origin: str) -> protego.Protego | None:
        """Fetch and parse robots.txt; ``None`` means no rules or all disallowed."""
        url = f"{origin}/robots.txt"
        try:
            _, response, body = await self._get(url, "robots")
        except _Skip as exc:
            if not exc.unreachable:
                return None  # RFC 9309: bad redirects count as "unavailable": no rules
            reason = exc.reason
        else:
            if 200 <= response.status_code < 300:
                # Protego, not urllib.robotparser: that one knows no "*" or "$"
                # patterns, applies the first matching rule instead of the
                # longest, and reads only whole-second crawl delays.
                return protego.Protego.parse(body.decode("utf-8", errors="replace"))
            if response.status_code < 500:
                return None  # 4xx (and odd statuses): the site has no rules
            reason = f"HTTP {response.status_code}"
        warnings.warn(
            f"{url}: robots.txt unavailable ({reason}); not crawling {origin}",
            RetrievalWarning,
            stacklevel=2,
        )
        self.robots_errors[origin] = f"robots.txt unavailable ({reason})"
        return None

    @contextlib.asynccontextmanager
    async def _request_slot(self, origin: str, delay: float) -> AsyncIterator[None]:
        """Hold one of ``concurrency`` request slots, honouring Crawl-delay and retry pauses."""
        loop = asyncio.get_running_loop()
        pause = self.paused_until.get(origin, 0.0) - loop.time()
        while pause > 0:  # another retry may extend the pause meanwhile
            await asyncio.sleep(pause)
            pause = self.paused_until.get(origin, 0.0) - loop.time()
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
        token = self.robots_token
        chain = [url]
        hop = url
        try:
            while True:
                delay = 0.0
                origin = _origin(hop)
                if kind != "robots" and config.respect_robots:
                    robots = await self._robots_for(origin)
                    if origin in self.robots_errors:
                        raise _Skip(self.robots_errors[origin], "robots_unavailable")
                    if robots is not None:
                        if not robots.can_fetch(hop, token):
                            raise _Skip("disallowed by robots.txt", "robots")
                        delay = robots.crawl_delay(token) or 0.0
                target, response, body = await self._attempts(hop, kind, origin, delay)
                if target is None:
                    return hop, response, body
                _next_hop(chain, target, config.max_redirects)
                if kind == "page" and not any_host and not self._host_allowed(target):
                    raise _Skip(f"redirected off-site to {target}", "off_site")
                hop = target
        except _Skip as exc:
            raise _Skip(
                _with_hop(exc.reason, url, hop), exc.kind, unreachable=exc.unreachable
            ) from None
        except (asyncio.TimeoutError, httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            failure = _describe_error(exc, config.timeout)
            raise _Skip(
                _with_hop(failure.reason, url, hop), failure.kind, unreachable=True
            ) from None

    async def _attempts(
        self, url: str, kind: _Kind, origin: str, delay: float
    ) -> tuple[str | None, httpx.Response, bytes]:
        """:meth:`_get_one`, retried after HTTP 429/503 and once after a dropped request."""
        config = self.config
        attempts = 0
        dropped = False
        while True:
            attempts += 1
            try:
                async with self._request_slot(origin, delay):
                    return await asyncio.wait_for(self._get_one(url, kind), config.timeout)
            except _Busy as busy:
                wait = busy.retry_after
                if wait is None:
                    wait = config.backoff * 2 ** (attempts - 1)
                if attempts > config.retries:
                    why = f"{attempts} attempts"
                elif not self._pause_host(origin, wait):
                    why = (f"{attempts} attempt{'s' * (attempts > 1)}; waiting {wait:g} s more "
                           f"would pass max_retry_wait {config.max_retry_wait:g} s for this host")
                else:
                    continue
                if kind == "robots":
                    return None, busy.response, b""  # _load_robots judges the status
                raise _Skip(f"{busy.reason} ({why})", busy.kind) from None
            except (asyncio.TimeoutError, httpx.TimeoutException, httpx.ReadError,
                    httpx.WriteError, httpx.RemoteProtocolError) as exc:
                # A stall or a connection cut mid-request is often a passing
                # hiccup (a keep-alive connection the server just closed); a
                # refused connection is not, and is not retried.
                if dropped:
                    failure = _describe_error(exc, config.timeout)
                    raise _Skip(f"{failure.reason} (2 attempts)", failure.kind,
                                unreachable=True) from None
                dropped = True

    def _pause_host(self, origin: str, wait: float) -> bool:
        """Pause ``origin`` for ``wait`` seconds from now, if its retry budget allows."""
        now = asyncio.get_running_loop().time()
        until = max(self.paused_until.get(origin, now), now)
        # Only the time added to the host's pause is charged: tasks waiting
        # out one 429 together cost the budget once.
        extra = max(0.0, now + wait - until)
        left = self.retry_budget.get(origin, self.config.max_retry_wait)
        if extra > left:
            return False
        self.retry_budget[origin] = left - extra
        self.paused_until[origin] = max(until, now + wait)
        return True

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
            if response.status_code in _RETRY_CODES:
                raise _Busy(response)
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
        # Off the event loop: guessing an undeclared charset takes a fraction of a second.
        html = await asyncio.to_thread(_decode_html, body, response.charset_encoding)
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
        beyond_depth: set[str] = set()  # same-site links max_depth kept us from
        report.limits = {"max_depth": config.max_depth, "max_pages": config.max_pages,
                         "max_images": config.max_images}

        def accept(page: _Page, depth: int) -> None:
            nonlocal sequence
            if page.url in self.crawled_pages:
                return  # two links redirected to one page
            self.crawled_pages.add(page.url)
            self.seen_pages.add(page.url)
            report.pages += 1
            refs = _extract_refs(page.html, page.url)
            follow = config.max_depth is None or depth < config.max_depth
            for link in refs.links:
                if link in self.seen_pages or not self._host_allowed(link):
                    continue
                if not follow:
                    beyond_depth.add(link)
                    continue
                # Found again nearer the start (pages finish out of order): followed after all.
                beyond_depth.discard(link)
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
                    except RetrievalError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - one URL must not end the crawl
                        if not isinstance(exc, _Skip):
                            exc = _Skip(f"unexpected error: {type(exc).__name__}: {exc}", "other")
                        report.skipped.append((url, exc.reason))
                        report.skip_reasons[exc.kind] = report.skip_reasons.get(exc.kind, 0) + 1
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
        # Whatever is still queued was cut by the limit that stopped the loop.
        images_full = report.images >= config.max_images
        queued = {
            "max_depth": len(beyond_depth - self.crawled_pages),
            "max_pages": 0 if images_full else len(pending_pages),
            "max_images": len(pending_images) - image_cursor
            + (len(pending_pages) if images_full else 0),
        }
        report.unfollowed = {limit: n for limit, n in queued.items() if n}
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
    _log_run(out_dir, start_url, report)
    return report


def _log_run(out_dir: Path, start_url: str, report: CrawlReport) -> None:
    """Append the run's summary to ``crawls.jsonl``; warn (not fail) if it cannot."""
    entry = {
        "start_url": start_url,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **report.summary(),
    }
    path = out_dir / RUNS_NAME
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    except OSError as exc:
        # The images and manifest are written; only the run's record is lost.
        warnings.warn(f"Cannot write crawl summary {path}: {exc}", RetrievalWarning, stacklevel=2)


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
