"""Remake the README's screenshots of the search page (docs/serve-docs.png, docs/serve-images.png).

Run ``retrieval demo`` first (it builds ``demo-docs`` and ``demo-images``), then
``retrieval serve demo-docs demo-images`` in another shell, then::

    python docs/screenshots.py [http://127.0.0.1:8000]

Needs Playwright and Debian's ``chromium`` (like tests/test_browser.py).
"""
from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

OUT = Path(__file__).parent
WIDTH = 1100  # CSS pixels of the page; the PNGs are scaled down to SCALED
SCALED = 860
TEXT_QUERY = "solve a system of linear equations with a matrix"


def held_out_digit() -> bytes:
    """A PNG of a handwritten digit the demo index holds out (its 20 % of queries)."""
    from sklearn.datasets import load_digits

    from retrieval.demo import _split

    digits = load_digits()
    _, test = _split(len(digits.images))
    pixels = (digits.images[test[3]] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def save(png: bytes, path: Path) -> None:
    """Scale to SCALED pixels wide and store as a 256-colour PNG (a few tens of KB)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((SCALED, round(image.height * SCALED / image.width)), Image.LANCZOS)
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size / 1024:.0f} KB")


def clip_to(page, last_selector: str) -> dict:
    """The page from the top down to the bottom of ``last_selector``."""
    box = page.locator(last_selector).bounding_box()
    return {"x": 0, "y": 0, "width": WIDTH, "height": box["y"] + box["height"] + 12}


def main(url: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": WIDTH, "height": 900}, device_scale_factor=1.5)
        page.set_default_timeout(30_000)
        page.goto(f"{url}/?index=demo-docs")
        page.wait_for_selector("#index-select option", state="attached")
        page.fill("#k-input", "5")
        page.locator("#k-input").blur()  # before the query: its change event re-runs a search
        page.check("#compare-toggle")
        page.fill("#query", TEXT_QUERY)
        page.press("#query", "Enter")
        page.wait_for_selector("#results .columns .hit")
        page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
        save(page.screenshot(clip=clip_to(page, "#results .columns"), full_page=True), OUT / "serve-docs.png")

        page.goto(f"{url}/?index=demo-images")
        page.wait_for_selector("#drop-zone", state="visible")
        page.fill("#k-input", "12")
        page.locator("#k-input").blur()
        page.set_input_files("#image-input", files=[{"name": "digit.png", "mimeType": "image/png",
                                                     "buffer": held_out_digit()}])
        page.wait_for_selector("#results .grid.images .hit")
        page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        page.evaluate("document.activeElement.blur()")
        save(page.screenshot(clip=clip_to(page, "#results .grid"), full_page=True), OUT / "serve-images.png")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
