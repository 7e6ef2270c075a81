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


OVERLAP_JS = """() => {
  // per axis of every figure: the tick-label groups' boxes; per figure: the legends' boxes
  const out = [];
  const boxes = (els) => els.map(e => e.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0)
                            .map(r => [r.left, r.top, r.right, r.bottom]);
  for (const svg of document.querySelectorAll("figure svg")) {
    const fig = svg.closest("figure").id;
    for (const axis of svg.querySelectorAll('g[id*="matplotlib.axis_"]')) {
      const labels = [...axis.querySelectorAll('g[id*="tick_"] > g[id*="-text_"]')];
      out.push({fig, kind: "ticks", boxes: boxes(labels)});
    }
    out.push({fig, kind: "legends", boxes: boxes([...svg.querySelectorAll('g[id*="-legend_"]')])});
  }
  return out;
}"""


def _overlaps(boxes, slack=0.5):
    """Pairs of boxes whose intersection is more than slack px on both sides."""
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack:
                bad.append((a, b))
    return bad


def _sweep_with_long_categories(root: Path) -> Path:
    """Figure 2's eight activations (long names that once ran together as 'releaky_relugelusoftplus') by two losses."""
    import csv

    acts = ["relu", "leaky_relu", "gelu", "softplus", "tanh", "erf", "sigmoid", "quadratic"]
    rows = [
        {"model.activation": a, "loss.kind": loss, "seed": s, "status": "done", "regime": "residue-dominated",
         "norms.G": 1.0, "norms.S1": 0.0 if a == "quadratic" else 0.1 * (i + 1), "norms.S2": 0.5, "norms.E": 0.2,
         "rank.outliers": 1 + s}
        for i, a in enumerate(acts) for loss in ("mse", "logistic") for s in (0, 1)
    ]  # fmt: skip
    root.mkdir()
    with open(root / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    axes = {"model.activation": acts, "loss.kind": ["mse", "logistic"]}
    manifest = {"format": "gradrank-sweep/1", "schema": 1, "base_hash": "0" * 64, "axes": axes, "seeds": 2,
                "mode": "product", "command": "analyze", "keys": [*axes, "seed"], "base_config": {}, "points": []}  # fmt: skip
    (root / "sweep.json").write_text(json.dumps(manifest))
    return root


def test_tick_labels_and_legends_never_overlap(browser, tmp_path):
    """Chromium's layout of every figure of a sweep with long category names and of a training run:
    no two tick labels of an axis overlap, nor two legends of a figure."""
    from gradrank.report import render

    sweep = _sweep_with_long_categories(tmp_path / "sweep")
    render.render_dir(sweep, metrics="norms.S1/norms.E, norms.S2/norms.S1, rank.outliers")
    train = tmp_path / "train"
    small = ["data.n=60", "data.d=80", "model.width=100", "train.steps=20", "train.optimizer=sgd", "train.batch_size=20"]
    res = CliRunner().invoke(app, ["train", *sum((["--set", s] for s in small), []), "-o", str(train), "-q"])
    assert res.exit_code == 0, res.output
    for d, figures in ((sweep, 5), (train, 5)):
        ctx, page, _ = _open(browser, (d / "report.html").as_uri())
        try:
            groups = page.evaluate(OVERLAP_JS)
            assert len({g["fig"] for g in groups}) == figures
            assert sum(len(g["boxes"]) for g in groups if g["kind"] == "ticks") > 40
            bad = [(g["fig"], g["kind"], _overlaps(g["boxes"])) for g in groups if _overlaps(g["boxes"])]
            assert bad == []
        finally:
            ctx.close()
