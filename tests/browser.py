"""Open an HTML file in a real headless Chromium (the system's, driven by playwright) and say what happened."""
from __future__ import annotations

import os
import shutil

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str:
    """The system Chromium, or skip: .ci/run installs it (apt-get install chromium), so only a
    machine where no browser can be installed gets here."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine and none could be installed (apt-get install chromium)")


def open_in_chromium(html_path: str, screenshot: str, width: int = 1280) -> dict:
    """Console messages and page errors, each chart's and image's rendered size, and a full-page PNG.

    The page is loaded from file:// with every network request refused and recorded, so anything the
    report fetched from elsewhere would show up in `requests`.
    """
    from playwright.sync_api import sync_playwright

    out = {"console": [], "errors": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: out["console"].append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: out["errors"].append(str(e)))

            def refuse(route):
                out["requests"].append(route.request.url)
                route.abort()

            page.route("http*://**", refuse)
            page.goto("file://" + os.path.abspath(html_path), wait_until="load")
            out["charts"] = page.eval_on_selector_all(
                "svg.chart", "els => els.map(e => { const r = e.getBoundingClientRect();"
                " return {label: e.getAttribute('aria-label'), width: r.width, height: r.height,"
                " marks: e.querySelectorAll('rect, polyline, circle').length}; })")
            out["images"] = page.eval_on_selector_all(
                "img", "els => els.map(e => ({complete: e.complete, width: e.naturalWidth, height: e.naturalHeight}))")
            out["sections"] = page.eval_on_selector_all("section h2", "els => els.map(e => e.textContent)")
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return out
