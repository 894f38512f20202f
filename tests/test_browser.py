"""The web page of ``retrieval serve`` in a real browser: Debian's Chromium driven by Playwright.

The server is the real one, started by the CLI in a subprocess over a store of
tiny indexes (``served_home``); what the page shows is checked against what the
API answers for the same request. Each test saves screenshots of the page
states it reaches into its temporary folder.

Without Chromium or Playwright the tests are skipped, unless
``RETRIEVAL_REQUIRE_BROWSER=1`` (set by ``.ci/run``), which makes them fail.
"""
from __future__ import annotations

import base64
import os
import shutil
import time
from urllib.parse import quote

import httpx
import pytest

from conftest import SERVED_DOCS, SERVED_IMAGES, ServerProcess

WAIT_MS = 10_000  # every wait for the page is bounded by this
MAP_READY_S = 120  # the map's first computation trains a small model in the server (started at start-up)


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


PROBLEM = _missing()
REQUIRED = os.environ.get("RETRIEVAL_REQUIRE_BROWSER") == "1"
if PROBLEM and not REQUIRED:
    pytestmark = pytest.mark.skip(reason=PROBLEM)


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is
# open; tests of other modules (the crawler's asyncio.run) must not find one.
@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the session (the system one: Playwright cannot download its own here)."""
    if PROBLEM:
        pytest.fail(f"RETRIEVAL_REQUIRE_BROWSER=1 but {PROBLEM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                     args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(browser, served_home):
    home, _, _ = served_home
    process = ServerProcess(home, [SERVED_DOCS, SERVED_IMAGES])
    try:
        # Start the document map's first computation now; test_map runs last and finds it ready.
        httpx.get(f"{process.url}/api/indexes/{SERVED_DOCS}/map", timeout=10)
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/")
    page.wait_for_selector("#index-select option", state="attached")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# -- helpers ---------------------------------------------------------------------------------------
def shot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


def wait_for_hits(page, needle: str = "") -> None:
    """Wait until the status line reports a finished search (mentioning ``needle``)."""
    page.wait_for_function(
        """needle => {
             const s = document.getElementById('status').textContent;
             return /\\d+ hits? by/.test(s) && s.includes(needle) && !document.getElementById('results').hasAttribute('aria-busy');
           }""", arg=needle, timeout=WAIT_MS)


def hit_ids(page, scope: str = "#results") -> list[str]:
    return page.locator(f"{scope} .hit").evaluate_all("els => els.map(e => e.dataset.id)")


def api_search(server, index: str, **body) -> dict:
    files = body.pop("files", None)
    url = f"{server.url}/api/indexes/{index}/search"
    response = (httpx.post(url, data={k: str(v) for k, v in body.items()}, files=files, timeout=30) if files
                else httpx.post(url, json=body, timeout=30))
    assert response.status_code == 200, response.text
    return response.json()


def choose_index(page, name: str) -> None:
    page.select_option("#index-select", name)
    page.wait_for_function("name => document.getElementById('status').textContent.startsWith('Index ' + name)",
                           arg=name)


def search_text(page, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")
    wait_for_hits(page, text)


# -- tests -----------------------------------------------------------------------------------------
def test_text_query_shows_document_hits_novelty_and_evaluation(page, server, tmp_path):
    query = "orbit rocket launch nasa satellite"
    search_text(page, query)
    expected = api_search(server, SERVED_DOCS, text=query, k=10)
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    first = page.locator("#results .hit").first
    assert first.locator(".hit-title").inner_text() == expected["hits"][0]["title"]
    assert first.locator(".label").inner_text() == expected["hits"][0]["label"]
    assert first.locator(".snippet").inner_text().strip()
    assert page.locator("#results .more-like").count() == len(expected["hits"])
    assert f"{len(expected['hits'])} hits by ae" in page.inner_text("#status")

    percentile = expected["novelty"]["percentile"]
    assert page.locator("#novelty").is_visible()
    assert f"higher than {round(percentile)} % of the indexed items" in page.inner_text("#novelty-text")

    methods = page.locator("#evaluation tbody th").all_inner_texts()
    assert any(m.startswith("ae") for m in methods) and "lsa" in methods, methods
    assert page.locator("#evaluation td").count() >= len(methods)
    shot(page, tmp_path, "docs-results")

    page.select_option("#method-select", "lsa")  # the method switcher re-runs the query
    wait_for_hits(page, "by lsa")
    assert hit_ids(page) == [h["id"] for h in api_search(server, SERVED_DOCS, text=query, k=10, method="lsa")["hits"]]


def test_keyboard_tab_reaches_the_search_box_and_enter_searches(page, tmp_path):
    focused = []
    for _ in range(10):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
        if focused[-1] == "query":
            break
    assert focused[-1] == "query", f"Tab went through {focused} and never reached the search box"
    assert focused.index("index-select") < focused.index("query")  # the index first, then what to search
    page.keyboard.type("doctor patient disease")
    page.keyboard.press("Enter")
    wait_for_hits(page, "doctor patient disease")
    assert page.locator("#results .hit").count() == 10
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "search-button"
    # A visible focus indicator on the focused control.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    shot(page, tmp_path, "keyboard")


def test_image_from_the_file_picker_and_a_drop_shows_neighbours(page, server, served_home, tmp_path):
    _, _, images = served_home
    choose_index(page, SERVED_IMAGES)
    assert page.locator("#drop-zone").evaluate("e => e.tagName") == "BUTTON"  # keyboard-usable
    assert not page.locator("#query").is_visible()

    picked = images / "disc" / "disc00.png"
    page.set_input_files("#image-input", str(picked))
    wait_for_hits(page, picked.name)
    expected = api_search(server, SERVED_IMAGES, k=10, files={"image": (picked.name, picked.read_bytes(), "image/png")})
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    alts = page.locator("#results img").evaluate_all("els => els.map(e => e.alt)")
    assert len(alts) == 10 and all(alts)
    assert page.locator("#query-image").get_attribute("alt")
    shot(page, tmp_path, "image-picked")

    dropped = images / "bars" / "bars03.png"
    page.evaluate(
        """([data, name]) => {
             const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], name, {type: 'image/png'}));
             const zone = document.getElementById('drop-zone');
             for (const type of ['dragenter', 'dragover', 'drop']) {
               zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
             }
           }""", [base64.b64encode(dropped.read_bytes()).decode(), dropped.name])
    wait_for_hits(page, dropped.name)
    expected = api_search(server, SERVED_IMAGES, k=10, files={"image": (dropped.name, dropped.read_bytes(), "image/png")})
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    shot(page, tmp_path, "image-dropped")


def test_compare_view_shows_both_columns_and_marks_shared_hits(page, server, tmp_path):
    query = "orbit rocket launch nasa satellite moon"
    page.fill("#k-input", "20")
    page.check("#compare-toggle")
    assert page.locator("#method-select").is_disabled()
    search_text(page, query)
    columns = page.locator("#results .column")
    assert columns.count() == 2
    ae = api_search(server, SERVED_DOCS, text=query, k=20, method="ae")
    lsa = api_search(server, SERVED_DOCS, text=query, k=20, method="lsa")
    assert columns.nth(0).locator("h3").inner_text().startswith("ae")
    assert columns.nth(1).locator("h3").inner_text().startswith("lsa")
    left, right = hit_ids(page, "#results .column.default"), hit_ids(page, "#results .column.baseline")
    assert left == [h["id"] for h in ae["hits"]] and right == [h["id"] for h in lsa["hits"]]

    both = set(left) & set(right)
    assert both, "the test query should share hits between the methods"
    marked = page.locator("#results .hit.shared").evaluate_all("els => els.map(e => e.dataset.id)")
    assert sorted(marked) == sorted([*both, *both])  # once in each column
    badges = page.locator("#results .hit.shared .badge").all_text_contents()
    assert len(badges) == len(marked) and all("also found by" in b for b in badges)  # words for screen readers
    assert f"{len(both)} found by both" in page.inner_text("#status")
    if len(both) < len(left):  # a shared hit looks different from the others
        style = "e => getComputedStyle(e).borderColor + getComputedStyle(e).backgroundColor"
        plain = page.locator("#results .hit:not(.shared)").first.evaluate(style)
        assert page.locator("#results .hit.shared").first.evaluate(style) != plain
    shot(page, tmp_path, "compare")


def test_item_dialog_and_more_like_this(page, server, tmp_path):
    search_text(page, "keyboard monitor software driver")
    first_id = hit_ids(page)[0]
    assert "/" in first_id  # ids with a slash travel URL-encoded
    item = httpx.get(f"{server.url}/api/indexes/{SERVED_DOCS}/items/{quote(first_id, safe='')}").json()

    page.locator("#results .hit-open").first.click()
    page.wait_for_selector("#item-dialog[open]")
    assert page.inner_text("#item-title") == (item["title"] or item["id"])
    assert item["text"].split("\n")[0] in page.inner_text("#item-body")
    shot(page, tmp_path, "item")

    page.click("#item-more")
    wait_for_hits(page, f"items like {first_id}")
    assert not page.locator("#item-dialog").evaluate("d => d.open")
    like = api_search(server, SERVED_DOCS, like=first_id, k=10)
    assert hit_ids(page) == [h["id"] for h in like["hits"]] and first_id not in hit_ids(page)
    shot(page, tmp_path, "more-like-dialog")

    second = hit_ids(page)[1]
    page.locator("#results .more-like").nth(1).click()
    wait_for_hits(page, f"items like {second}")
    assert hit_ids(page) == [h["id"] for h in api_search(server, SERVED_DOCS, like=second, k=10)["hits"]]
    shot(page, tmp_path, "more-like-card")


def test_api_errors_show_in_the_alert_region(page, server, tmp_path):
    assert page.locator("#alert").is_hidden()
    query = "zzzzqx qqqqvw"  # no word of the index's vocabulary
    answer = httpx.post(f"{server.url}/api/indexes/{SERVED_DOCS}/search", json={"text": query}, timeout=30)
    assert answer.status_code == 400
    page.fill("#query", query)
    page.press("#query", "Enter")
    page.wait_for_selector("#alert", state="visible")
    assert page.locator("#alert").get_attribute("role") == "alert"
    assert page.inner_text("#alert") == answer.json()["error"]
    assert "Failed" in page.inner_text("#status")
    shot(page, tmp_path, "error")

    choose_index(page, SERVED_IMAGES)  # switching index clears the alert; this one was never evaluated
    assert page.locator("#alert").is_hidden()
    page.wait_for_function("() => document.getElementById('evaluation').textContent.includes('Not evaluated yet')")


def test_filter_fields_keep_only_matching_hits_and_say_when_nothing_matches(page, server, tmp_path):
    query = "orbit rocket launch nasa satellite"  # a space query: unfiltered, its hits are space documents
    where = "id NOT LIKE '%0.txt' AND id NOT LIKE '%5.txt'"
    page.fill("#label-filter", "medicine")
    page.fill("#where-filter", where)
    search_text(page, query)
    expected = api_search(server, SERVED_DOCS, text=query, k=10, label="medicine", where=where)
    ids = hit_ids(page)
    assert ids == [h["id"] for h in expected["hits"]] and len(ids) == 10
    assert all(not i.endswith(("0.txt", "5.txt")) for i in ids), ids  # the where holds for every hit shown
    assert page.locator("#results .hit .label").all_inner_texts() == ["medicine"] * 10  # and the label
    unfiltered = api_search(server, SERVED_DOCS, text=query, k=10)
    assert {h["label"] for h in unfiltered["hits"]} != {"medicine"}  # the filter changed what is shown
    shot(page, tmp_path, "filtered")

    page.fill("#where-filter", "length < 0")  # keeps no item; Enter in the field searches again
    page.press("#where-filter", "Enter")
    page.wait_for_selector("#results p.empty")
    wait_for_hits(page, query)
    nothing = api_search(server, SERVED_DOCS, text=query, k=10, label="medicine", where="length < 0")
    assert nothing["hits"] == [] and nothing["matches"] == 0
    message = page.inner_text("#results p.empty")
    assert message == nothing["message"] and "matches the filter" in message, message
    assert page.locator("#results .hit").count() == 0 and "0 hits by" in page.inner_text("#status")
    assert page.locator("#alert").is_hidden()  # no matching item is an answer, not an error
    shot(page, tmp_path, "filtered-nothing")


def test_map_shows_points_by_label_and_a_point_opens_its_item(page, server, tmp_path):
    url = f"{server.url}/api/indexes/{SERVED_DOCS}/map"
    deadline = time.monotonic() + MAP_READY_S
    while (answer := httpx.get(url, timeout=10)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}\n{server.log()}"
    points = answer.json()["points"]

    page.click("#map-button")
    page.wait_for_selector("#map .point")
    assert page.locator("#map .point").count() == len(points)
    legend = page.locator("#legend li").all_inner_texts()
    assert len(legend) == len(answer.json()["labels"]) == 4
    shot(page, tmp_path, "map")

    point = page.locator("#map .point").first
    point_id = point.get_attribute("data-id")
    point.dispatch_event("click")
    page.wait_for_selector("#item-dialog[open]")
    assert point_id in page.inner_text("#item-meta")
    shot(page, tmp_path, "map-item")
    page.click("#item-close")

    page.focus("#map svg")  # the keyboard reaches every point too
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_selector("#item-dialog[open]")
