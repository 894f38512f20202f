"""The crawler on real-world input: charsets, robots.txt patterns, busy servers, limits.

Sites are served on 127.0.0.1 by the programmable server of test_crawl.py;
retry waits are milliseconds (``backoff``) or bounded by ``max_retry_wait``.
"""
from __future__ import annotations

import codecs
import json
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from retrieval.sources.crawl import RUNS_NAME, _decode_html, _retry_after, crawl
from test_cli import run as run_cli
from test_crawl import CONFIG, Resp, Site, make_image, read_manifest, skip_reason


@pytest.fixture
def site():
    s = Site("127.0.0.1")
    yield s
    s.close()


# --------------------------------------------------------------------------
# Page charsets


def _page_with_alt(site: Site, content_type: str, prefix: str, alt: str, codec: str) -> None:
    site.image("/a.png", make_image(1))
    html = f'<html><head>{prefix}</head><body><p>{alt}</p><img src="/a.png" alt="{alt}"></body></html>'
    site.routes["/"] = Resp(html.encode(codec), content_type)


@pytest.mark.parametrize("content_type, prefix, alt, codec", [
    # No declaration at all: not UTF-8, so detected.
    ("text/html", "", "Café crème à la tête", "latin-1"),
    ("text/html", '<meta charset="windows-1251">', "Фотография кошки на окне", "cp1251"),
    ("text/html", '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">',
     "Фотография кошки на окне", "koi8-r"),
    # An unknown name in the header is passed over for the <meta>.
    ("text/html; charset=x-no-such-charset", '<meta charset="shift_jis">', "猫の写真です", "shift_jis"),
    # An unknown name in the <meta> is passed over for detection.
    ("text/html", '<meta charset="no-such-charset">', "Café crème à la tête", "latin-1"),
    # "iso-8859-1" means windows-1252 on the web (curly quotes in 0x80-0x9F).
    ("text/html; charset=iso-8859-1", "", "“Café” – crème", "cp1252"),
    # The header outranks a wrong <meta>.
    ("text/html; charset=utf-8", '<meta charset="windows-1251">', "Café 猫", "utf-8"),
])
def test_page_charset_is_found_for_alt_text(site, tmp_path, content_type, prefix, alt, codec):
    _page_with_alt(site, content_type, prefix, alt, codec)

    report = crawl(site.url("/"), tmp_path, CONFIG)

    assert report.images == 1
    [entry] = read_manifest(tmp_path)
    assert entry["alt"] == alt


def test_decode_html_order_and_odd_labels():
    text = "<p>café</p>"
    # A byte order mark wins over the header (the HTML standard's order).
    assert _decode_html(codecs.BOM_UTF8 + text.encode(), "windows-1251") == text
    assert _decode_html(codecs.BOM_UTF16_LE + text.encode("utf-16-le"), None) == text
    # Codecs that are no web charset are ignored, never run or fatal.
    for label in ("base64", "rot13", "zlib", "utf-7", "undefined", "unicode_escape", ""):
        body = f'<meta charset="{label}">{text}'.encode()
        assert _decode_html(body, label) == body.decode()
    # A <meta> naming UTF-16 in ASCII bytes means UTF-8.
    body = f'<meta charset="utf-16">{text}'.encode()
    assert _decode_html(body, None) == body.decode()
    # Long pages without a declaration: detection reads a bounded sample.
    words = ["café", "été", "crème", "forêt", "château", "garçon", "naïve", "où", "déjà", "Noël"]
    rows = [f'<li><img src="/{i}.jpg" alt="{words[i % 10]} à {words[i * 7 % 10]}"> n°{i}</li>'
            for i in range(3000)]
    page = "<ul>\n" + "\n".join(rows) + "\n</ul>"
    assert _decode_html(page.encode("cp1252"), None) == page
    # Detection still tells other scripts apart.
    russian = "<p>Фотография кошки на окне</p><img alt='Фото кошки'>"
    assert _decode_html(russian.encode("cp1251"), None) == russian


# --------------------------------------------------------------------------
# robots.txt


def test_robots_wildcards_dollar_and_longest_match(site, tmp_path):
    site.routes["/robots.txt"] = Resp(
        b"User-agent: *\nDisallow: /\n\n"
        b"User-agent: retrieval\nDisallow: /*.gif$\nDisallow: /gallery/\nAllow: /gallery/public/\n",
        "text/plain",
    )
    site.image("/a.gif", make_image(1, "GIF"), "image/gif")
    site.image("/a.gif?size=2", make_image(2, "GIF"), "image/gif")
    site.image("/b.png", make_image(3))
    site.image("/gallery/secret.png", make_image(4))
    site.image("/gallery/public/ok.png", make_image(5))
    site.page("/", "".join(f'<img src="{p}">' for p in (
        "/a.gif", "/a.gif?size=2", "/b.png", "/gallery/secret.png", "/gallery/public/ok.png")))

    report = crawl(site.url("/"), tmp_path, CONFIG)

    # "$" anchors the end ("?size=2" escapes it); the longer Allow beats the Disallow.
    assert skip_reason(report, site.url("/a.gif")) == "disallowed by robots.txt"
    assert skip_reason(report, site.url("/gallery/secret.png")) == "disallowed by robots.txt"
    assert site.hits["/a.gif"] == 0 and site.hits["/gallery/secret.png"] == 0
    assert report.images == 3 and report.skip_reasons == {"robots": 2}


def test_robots_fractional_crawl_delay_and_product_token_groups(site, tmp_path):
    # Groups for other robots whose names occur inside our User-Agent header
    # ("eval" in "retrieval", "crawler" in "image crawler") do not apply.
    site.routes["/robots.txt"] = Resp(
        b"User-agent: eval\nDisallow: /\nCrawl-delay: 5\n\n"
        b"User-agent: crawler\nDisallow: /\n\n"
        b"User-agent: *\nCrawl-delay: 0.2\n",
        "text/plain",
    )
    for i in range(3):
        site.image(f"/{i}.png", make_image(i))
    site.page("/", "".join(f'<img src="/{i}.png">' for i in range(3)))

    report = crawl(site.url("/"), tmp_path, replace(CONFIG, concurrency=4))

    assert report.images == 3 and report.skipped == []
    starts = [t for path, t in site.request_times if path != "/robots.txt"]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 3 and min(gaps) >= 0.15, gaps  # 0.2 s minus scheduling jitter
    assert max(gaps) < 2, gaps  # not the 5 s of the "eval" group


# --------------------------------------------------------------------------
# Busy servers: 429/503, Retry-After, dropped connections


def test_503_with_retry_after_zero_is_retried_and_fetched(site, tmp_path):
    busy = Resp(b"busy", "text/plain", 503, {"Retry-After": "0"})
    site.routes["/"] = [busy, Resp(b'<img src="/a.png">')]
    site.routes["/a.png"] = [busy, Resp(make_image(1), "image/png")]

    started = time.monotonic()
    # A 30 s backoff shows that Retry-After, not the backoff, set the wait.
    report = crawl(site.url("/"), tmp_path, replace(CONFIG, backoff=30.0))

    assert time.monotonic() - started < 5
    assert report.pages == 1 and report.images == 1 and report.skipped == []
    assert site.hits["/"] == 2 and site.hits["/a.png"] == 2


def test_always_429_is_skipped_after_bounded_attempts(site, tmp_path):
    site.routes["/busy.png"] = Resp(b"slow down", "text/plain", 429)
    site.image("/ok.png", make_image(1))
    site.page("/", '<img src="/busy.png"><img src="/ok.png">')

    started = time.monotonic()
    report = crawl(site.url("/"), tmp_path, replace(CONFIG, retries=2, backoff=0.01))

    assert time.monotonic() - started < 5
    assert site.hits["/busy.png"] == 3
    assert skip_reason(report, site.url("/busy.png")) == "HTTP 429 Too Many Requests (3 attempts)"
    assert report.skip_reasons == {"http_429": 1} and report.images == 1


def test_retry_after_dates_and_the_retry_budget(site, tmp_path):
    past = format_datetime(datetime.now(timezone.utc) - timedelta(hours=1), usegmt=True)
    site.routes["/dated.png"] = [
        Resp(b"", "text/plain", 503, {"Retry-After": past}), Resp(make_image(1), "image/png")
    ]
    site.routes["/later.png"] = Resp(b"", "text/plain", 503, {"Retry-After": "3600"})
    site.page("/", '<img src="/dated.png"><img src="/later.png">')

    started = time.monotonic()
    report = crawl(site.url("/"), tmp_path, replace(CONFIG, backoff=30.0, max_retry_wait=1.0))

    assert time.monotonic() - started < 5
    assert report.images == 1 and site.hits["/dated.png"] == 2
    # An hour's wait is more than the budget: skipped at once, not retried early.
    assert site.hits["/later.png"] == 1
    reason = skip_reason(report, site.url("/later.png"))
    assert reason.startswith("HTTP 503") and "max_retry_wait 1 s" in reason


def test_retry_after_parsing():
    assert _retry_after("120") == 120
    assert _retry_after(" 0 ") == 0
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=90), usegmt=True)
    assert 80 < _retry_after(soon) <= 90
    past = format_datetime(datetime.now(timezone.utc) - timedelta(days=1), usegmt=True)
    assert _retry_after(past) == 0
    for bad in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"):
        assert _retry_after(bad) is None


def test_a_dropped_connection_is_retried_once(site, tmp_path):
    site.routes["/once.png"] = [Resp(drop=True), Resp(make_image(1), "image/png")]
    site.routes["/always.png"] = Resp(drop=True)
    site.page("/", '<img src="/once.png"><img src="/always.png">')

    report = crawl(site.url("/"), tmp_path, CONFIG)

    assert report.images == 1 and site.hits["/once.png"] == 2
    assert site.hits["/always.png"] == 2
    assert skip_reason(report, site.url("/always.png")).endswith("(2 attempts)")
    assert report.skip_reasons == {"network": 1}


# --------------------------------------------------------------------------
# Limits and what they cut


def test_default_follows_five_pages_of_pagination(site, tmp_path):
    for i in range(1, 6):
        more = f'<a href="/gallery/{i + 1}">next</a>' if i < 5 else ""
        site.page(f"/gallery/{i}", f'<img src="/g{i}.png">{more}')
        site.image(f"/g{i}.png", make_image(i))

    report = crawl(site.url("/gallery/1"), tmp_path, CONFIG)

    assert report.pages == 5 and report.images == 5
    assert report.unfollowed == {}


# --------------------------------------------------------------------------
# Skip reasons and cuts: report, crawls.jsonl, CLI


def test_skip_reasons_and_cuts_in_json_human_output_and_run_log(site, tmp_path, monkeypatch, capsys):
    site.routes["/robots.txt"] = Resp(b"User-agent: *\nDisallow: /private/\n", "text/plain")
    site.routes["/error.png"] = Resp(b"", "image/png", status=500)
    site.image("/text.png", b"just text", "image/png")
    site.image("/ok.png", make_image(1))
    site.page("/", """<img src="/gone1.png"><img src="/gone2.png"><img src="/error.png">
        <img src="/private/p.png"><img src="/text.png"><img src="/ok.png">
        <a href="/one.html">1</a>""")
    site.page("/one.html", '<a href="/two.html">2</a><a href="/three.html">3</a>')
    out_dir = tmp_path / "out"
    expected = {"http_404": 2, "http_500": 1, "not_image": 1, "robots": 1}

    code, out, err = run_cli(monkeypatch, capsys, "crawl", site.url("/"), "--out", out_dir,
                             "--max-depth", 1, "--json")

    assert code == 0, err
    summary = json.loads(out)
    assert summary["skipped"] == 5 and summary["skip_reasons"] == expected
    assert summary["unfollowed"] == {"max_depth": 2}
    assert summary["limits"]["max_depth"] == 1 and summary["images"] == 1
    [logged] = [json.loads(line) for line in (out_dir / RUNS_NAME).read_text().splitlines()]
    assert logged["start_url"] == site.url("/")
    assert {k: logged[k] for k in ("skip_reasons", "unfollowed", "limits")} == {
        k: summary[k] for k in ("skip_reasons", "unfollowed", "limits")
    }

    code, out, err = run_cli(monkeypatch, capsys, "crawl", site.url("/"), "--out", out_dir, "--max-depth", 1)

    assert code == 0, err
    assert "skipped 5: http_404 2, http_500 1, not_image 1, robots 1" in out
    assert "links left unfollowed: 2 beyond --max-depth 1" in out
    assert len((out_dir / RUNS_NAME).read_text().splitlines()) == 2
