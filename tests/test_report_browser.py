"""The HTML report in real headless Chromium (Debian's /usr/bin/chromium, installed by .ci/run):
no console errors, no requests beyond the file itself, every figure visible, the hostile run
name shown as text and never executed, readable with JavaScript off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradrank.cli.app import app

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
EVIL = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


@pytest.fixture(scope="module")
def report_url(tmp_path_factory):
    """`gradrank analyze` (small size, hostile name) writes the report; its file:// URL."""
    out = tmp_path_factory.mktemp("browser") / "run"
    res = CliRunner().invoke(
        app,
        [
            "analyze",
            "--set",
            "data.n=60",
            "--set",
            "data.d=80",
            "--set",
            "model.width=100",
            "--set",
            f"output.name={json.dumps(EVIL)}",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    return (out / "report.html").as_uri()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), "Debian's chromium is required at /usr/bin/chromium (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield b
        b.close()


def _open(browser, url, javascript=True):
    ctx = browser.new_context(java_script_enabled=javascript, viewport={"width": 1100, "height": 900})
    page = ctx.new_page()
    events = {"console": [], "failed": [], "requests": [], "errors": []}
    page.on("console", lambda m: events["console"].append((m.type, m.text)))
    page.on("requestfailed", lambda r: events["failed"].append(r.url))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.goto(url, wait_until="load")
    return ctx, page, events


def test_report_in_chromium(browser, report_url):
    ctx, page, ev = _open(browser, report_url)
    try:
        assert [c for c in ev["console"] if c[0] in ("error", "warning")] == [] and ev["errors"] == []
        assert ev["failed"] == [] and ev["requests"] == [report_url]
        assert page.evaluate("window.__xss") is None
        assert page.evaluate("document.scripts.length") == 0
        assert page.inner_text("h1") == EVIL and page.title() == f"gradrank — {EVIL}"
        assert page.locator("img").count() == 0  # the injected <img onerror> is text, not an element
        figures = page.locator("figure")
        assert figures.count() == 4
        for i in range(4):
            fig = figures.nth(i)
            fig.scroll_into_view_if_needed()
            svg = fig.locator("svg")
            assert svg.is_visible() and fig.locator("figcaption").is_visible()
            box = svg.bounding_box()
            assert box["width"] > 200 and box["height"] > 80, box
            assert box["width"] <= 1100  # scaled to the page, never wider than the viewport
        assert "rank" in page.inner_text("#headline") and "‖S1‖" in page.inner_text("#headline")
    finally:
        ctx.close()


def test_report_without_javascript(browser, report_url):
    ctx, page, ev = _open(browser, report_url, javascript=False)
    try:
        assert ev["failed"] == [] and [c for c in ev["console"] if c[0] == "error"] == []
        assert page.locator("figure svg").count() == 4 and all(
            page.locator("figure svg").nth(i).bounding_box()["height"] > 80 for i in range(4)
        )
        assert page.locator("table.config-section").count() >= 8 and page.inner_text("h1") == EVIL
    finally:
        ctx.close()


def test_onestep_report_in_chromium(browser, tmp_path):
    """`gradrank onestep` with a hostile name: both figures visible, nothing fetched, nothing executed."""
    out = tmp_path / "os"
    res = CliRunner().invoke(
        app,
        ["onestep", *[a for s in ("data.n=60", "data.d=40", "model.width=70") for a in ("--set", s)],
         "--set", f"output.name={json.dumps(EVIL)}", "--eta", "0,2,8", "--seeds", "3", "-o", str(out), "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    url = (out / "report.html").as_uri()
    ctx, page, ev = _open(browser, url)
    try:
        assert ev["failed"] == [] and ev["requests"] == [url] and ev["errors"] == []
        assert page.evaluate("window.__xss") is None and page.inner_text("h1") == EVIL
        figures = page.locator("figure")
        assert figures.count() == 2
        for i in range(2):
            box = figures.nth(i).locator("svg").bounding_box()
            assert box["width"] > 200 and box["height"] > 80, box
        assert "random features" in page.inner_text("#headline")
        assert page.locator("#points tr").count() == 1 + 9
    finally:
        ctx.close()
