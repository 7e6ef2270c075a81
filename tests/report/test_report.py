"""Report structure: headline and tables against metrics.json/config.toml, escaping, PDF pages,
training and sweep sections. Browser checks are in test_report_browser.py."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from gradrank import api
from gradrank.cli.app import app
from gradrank.report import render as report
from gradrank.report import run as run_report
from gradrank.report import sweep as sweep_report
from gradrank.studies import analyze as analysis

EVIL = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
SECTIONS = ["Key numbers", "Decomposition", "Data and provenance", "Configuration"]


class Page(HTMLParser):
    """What the tests look at: headings, key numbers, captions, config tables, svgs, pages, URLs."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.stack, self.urls, self.attrs_seen = [], [], [], []
        self.text: dict[str, list[str]] = {"h1": [], "h2": [], "figcaption": [], "headline": [], "title": []}
        self.keys: dict[str, str] = {}
        self.config: dict[str, dict[str, str]] = {}
        self.pages = self.svgs = 0
        self._buf = None
        self._section = self._row_key = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs_seen += [k for k, _ in attrs]
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]
        self.pages += tag == "section" and "page" in a.get("class", "").split()
        self.svgs += tag == "svg"
        if tag == "table" and a.get("data-section"):
            self._section = a["data-section"]
            self.config[self._section] = {}
        kind = (
            "headline"
            if a.get("id") == "headline"
            else tag
            if tag in self.text
            else f"key:{a['data-key']}"
            if tag == "td" and "data-key" in a
            else "cfg-th"
            if self._section and tag == "th"
            else "cfg-td"
            if self._section and tag == "td"
            else None
        )
        if kind:
            self.stack.append((tag, kind))
            self._buf = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._section = None
        if self.stack and self.stack[-1][0] == tag:
            _, kind = self.stack.pop()
            text = "".join(self._buf or []).strip()
            if kind.startswith("key:"):
                self.keys[kind[4:]] = text
            elif kind == "cfg-th":
                self._row_key = text
            elif kind == "cfg-td":
                self.config[self._section][self._row_key] = text
            else:
                self.text[kind].append(" ".join(text.split()))
            self._buf = [] if self.stack else None

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)


def _get(d, dotted):
    for part in dotted.split("."):
        d = d[part]
    return d


def _close(text: str, value: float, digits: int = 3) -> bool:
    """A number printed with `digits` significant figures agrees with the value it shows."""
    return math.isclose(float(text), value, rel_tol=0.51 * 10 ** (1 - digits), abs_tol=1e-300)


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    """A small analysis (n=60, d=80, m=100) with a hostile run name, written with HTML and PDF reports."""
    from gradrank import config

    cfg = config.load(sets=["data.n=60", "data.d=80", "model.width=100", "data.nu=0.4", "output.pdf=true"], seed=3)
    cfg = cfg.replace(**{"output.name": EVIL})
    target = tmp_path_factory.mktemp("rep") / "run"
    api.save(analysis.analyze(cfg), target)
    html = (target / "report.html").read_text(encoding="utf-8")
    return target, json.loads((target / "metrics.json").read_text()), html, Page(html)


def test_headline_matches_metrics(run):
    """The headline follows the outlier labels (one rule) and quotes only outliers."""
    _, m, _, page = run
    (headline,) = page.text["headline"]
    assert headline == run_report.headline(m)
    head = re.match(r"^(\S+): (\d+) outliers? above the bulk edge ([0-9.e+-]+)", headline)
    assert head and head.group(1) == m["regime"] and int(head.group(2)) == m["rank"]["outliers"]
    assert _close(head.group(3), m["bulk_edge"])
    said = re.findall(r"u(.) \(s. = (\S+)\) is the (residue|data spike) direction \(\|cos\(u., (X_Bᵀr|q)\)\| = (\S+)\)", headline)
    assert len(said) == min(2, m["rank"]["outliers"])
    for k, sk, what, vec, cos in said:
        i = "₁₂".index(k)
        assert m["outlier_labels"][i] == {"residue": "residue", "data spike": "spike"}[what]
        assert _close(sk, m["singular_values"][i]) and m["singular_values"][i] > m["bulk_edge"]
        assert abs(float(cos) - m["alignment"]["residue" if vec == "X_Bᵀr" else "spike"][i]) <= 0.005
    top = max(("S1", "S12", "S2", "E"), key=lambda t: m["norms"][t])
    assert re.search(rf"Largest term: the [a-z ]+ ‖{top}‖ = (\S+) ", headline)


def test_headline_wording_of_the_issue_example():
    """Real patches: s1 comes from S12, u1 is labelled spike, u2 is below the bulk edge and never quoted."""
    m = {
        "regime": "spike-dominated",
        "bulk_edge": 0.37203,
        "rank": {"outliers": 1, "stable": 1.4859},
        "norms": {"S1": 1.2391, "S12": 5.9, "S2": 1.16, "E": 0.35},
        "singular_values": [5.97, 0.3],
        "outlier_labels": ["spike"],
        "alignment": {"residue": [0.18856, 0.656], "spike": [0.943, 0.55599]},
    }
    assert run_report.headline(m) == (
        "spike-dominated: 1 outlier above the bulk edge 0.372: u₁ (s₁ = 5.97) is the data spike direction (|cos(u₁, q)| = 0.94). "
        "Largest term: the interpolant ‖S12‖ = 5.9 (‖S1‖ = 1.24, ‖S2‖ = 1.16, ‖E‖ = 0.35); stable rank 1.49."
    )
    m |= {"rank": {"outliers": 2, "stable": 1.2}, "outlier_labels": ["residue", "mixed"], "singular_values": [5.97, 0.5]}
    text = run_report.headline(m)
    assert "u₁ (s₁ = 5.97) is the residue direction (|cos(u₁, X_Bᵀr)| = 0.19)" in text
    assert "u₂ (s₂ = 0.5) is aligned with neither (|cos| 0.66 with X_Bᵀr, 0.56 with q)" in text


def test_key_numbers_match_metrics(run):
    _, m, _, page = run
    numeric = {k: v for k, v in page.keys.items() if k not in ("sizes", "config.model", "regime")}
    assert {
        "norms.G",
        "norms.S1",
        "norms.S12",
        "norms.S2",
        "norms.E",
        "rank.stable",
        "rank.outliers",
        "bulk_edge",
        "identity_error",
        "data.zeta",
    } <= set(numeric)
    for key, text in numeric.items():
        assert _close(text, float(_get(m, key))), (key, text)
    assert page.keys["regime"] == m["regime"]
    assert page.keys["sizes"] == "60 × 80 × 100"


def test_headings_figures_and_captions(run):
    _, m, _, page = run
    assert page.text["h1"] == [EVIL] and page.text["title"] == [f"gradrank — {EVIL}"]
    assert [h for h in page.text["h2"]] == SECTIONS
    captions = page.text["figcaption"]
    assert [c.split(".")[0] for c in captions] == [
        "Singular values of G",
        "Term norms",
        "Alignment of the top singular vectors",
        "Bulk spectrum and spike strength",
    ]
    assert all("Look" in c for c in captions)  # each caption says what to look for
    assert f"bulk edge {m['bulk_edge']:.3g}" in captions[0]
    assert f"‖S2‖/‖S1‖ = {m['norms']['S2'] / m['norms']['S1']:.3g}" in captions[1]
    assert page.svgs == 4 and page.pages == 4


def test_config_table_matches_config_toml(run):
    target, m, _, page = run
    toml = tomllib.loads((target / "config.toml").read_text())
    assert page.config["run"] == {"seed": str(toml["seed"])}
    for section, values in toml.items():
        if isinstance(values, dict):
            unset = set(page.config[section]) - set(values)  # TOML has no null: unset optional keys show a dash
            assert set(values) <= set(page.config[section]) and all(page.config[section][k] == "–" for k in unset), section
            assert all(m["config"][section][k] is None for k in unset)
            for key, value in values.items():
                shown = page.config[section][key]
                if isinstance(value, float):
                    assert _close(shown, value), (section, key)
                elif isinstance(value, bool):
                    assert shown == str(value)
                else:
                    assert shown == str(value), (section, key)
    assert page.config["output"]["name"] == EVIL


def test_escaped_self_contained_html(run):
    target, m, html, page = run
    assert "<script" not in html.lower() and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "script" not in page.tags and not [a for a in page.attrs_seen if a.startswith("on")]
    assert all(u.startswith(("#", "data:")) for u in page.urls), [u for u in page.urls if not u.startswith(("#", "data:"))][:3]
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)) > 20  # figure ids are prefixed per figure: no clashes between inline SVGs
    # provenance: config hash, seed, versions and timings
    prov = m["provenance"]
    for text in (m["config_hash"], prov["versions"]["torch"], prov["versions"]["numpy"], prov["dtype"], prov["device"]):
        assert f">{text}<" in html


def test_pdf_pages_and_rendering(run, tmp_path):
    target, _, _, page = run
    info = subprocess.run(["pdfinfo", str(target / "report.pdf")], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) == page.pages == 4
    assert "(A4)" in info
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(target / "report.pdf"), str(tmp_path / "p")], check=True)
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == 4
    import matplotlib.image as mpimg

    for png in pngs:  # every page has ink on it
        img = mpimg.imread(png)
        assert img.shape[0] > img.shape[1] and (img[..., :3] < 0.9).any(axis=-1).mean() > 0.01
    # re-rendering gives the same HTML bytes (no timestamps); letter paper via the CLI
    res = CliRunner().invoke(app, ["report", str(target), "--format", "pdf,html", "--paper", "letter", "-o", str(tmp_path / "l")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "l" / "report.html").read_bytes() == (target / "report.html").read_bytes().replace(
        b"size: A4;", b"size: letter;"
    )
    info = subprocess.run(["pdfinfo", str(tmp_path / "l" / "report.pdf")], capture_output=True, text=True, check=True).stdout
    assert "(letter)" in info and int(re.search(r"Pages:\s+(\d+)", info).group(1)) == 4


def test_report_command_bad_input(run, tmp_path):
    target, *_ = run
    runner = CliRunner()
    for args, field in (
        (["report", str(target), "--format", "svg"], "--format"),
        (["report", str(tmp_path / "missing")], "missing"),
        (["report", str(tmp_path)], str(tmp_path)),
        (["report", str(target), "--paper", "a5"], "--paper"),
    ):
        res = runner.invoke(app, args + ["-o", str(tmp_path / "out")])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and field in lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    res = runner.invoke(app, ["report", str(bad)])
    assert res.exit_code == 2 and "metrics.json" in res.output and not (bad / "report.html").exists()


def _manifest(**fields) -> dict:
    """A sweep.json with the manifest's required fields (the report reads axes, seeds, base_config)."""
    base = {"format": "gradrank-sweep/1", "schema": 1, "base_hash": "0" * 16, "axes": {}, "seeds": 0, "mode": "product"}
    return base | {"command": "analyze", "keys": list(fields.get("axes", {})), "base_config": {}, "points": []} | fields


def test_training_section(run, tmp_path):
    """A run dir with trajectory.csv gets a training page; missing columns are tolerated."""
    target, m, _, _ = run
    run_dir = tmp_path / "train"
    shutil.copytree(target, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text()) | {
        "kind": "train",
        "diverged": True,
        "message": "loss <inf> at step 45",
        "train": {
            "steps_done": 45,
            "lr_effective": 0.1,
            "n_test": 10,
            "records": 10,
            "track_fallbacks": 0,
            "track_iterations_mean": 1.0,
        },
        "final": {},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    steps = np.arange(0, 50, 5)
    outl = np.where(steps < 20, 1, 2)
    rows = [
        {
            "step": s,
            "train_loss": 1.0 / (1 + s),
            "test_loss": 1.2 / (1 + s),
            "S1": 1.0,
            "S2": 0.1 + s / 50,
            "E": 0.3,
            "s1": 1.1,
            "s2": 0.4,
            "s3": 0.2,
            "outliers": o,
            "stable_rank": 1.5 + s / 100,
            "align_residue_1": 0.9,
            "optimizer": "gd",
        }
        for s, o in zip(steps, outl)
    ]
    with open(run_dir / "trajectory.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, rows[0])
        w.writeheader()
        w.writerows(rows)
    (out,) = report.render_dir(run_dir)
    page = Page(out.read_text())
    assert page.text["h2"] == ["Key numbers", "Training", *SECTIONS[1:]] and page.pages == 5 and page.svgs == 5
    assert page.text["figcaption"][1].startswith("Loss and gradient structure over training")
    html = out.read_text()
    assert "The outlier count changes at step 20 (1 → 2)." in " ".join(html.split())
    assert "10 records up to step 45; train loss 1 → 0.0217, test loss 1.2 → 0.0261" in html and "outliers 1 → 2" in html
    assert '<p class="warning">warning: loss &lt;inf&gt; at step 45</p>' in html and "gradrank training run" in html
    # a bare trajectory (only step and loss) still renders its figure
    (run_dir / "trajectory.csv").write_text("step,train_loss\n0,1.0\n10,0.5\n")
    page = Page(report.render_dir(run_dir)[0].read_text())
    assert "Training" in page.text["h2"] and page.svgs == 5


def test_sweep_report_from_real_analyses(tmp_path):
    """A 2 x 2 grid (nu x activation) x 2 seeds of real small analyses, plus one failed point."""
    from gradrank import config

    nus, acts, seeds = [0.1, 0.6], ["relu", "tanh"], [0, 1]
    rows = []
    for nu in nus:
        for act in acts:
            for seed in seeds:
                cfg = config.load(
                    sets=["data.n=60", "data.d=80", "model.width=100", f"data.nu={nu}", f"model.activation={act}"], seed=seed
                )
                mt = analysis.analyze(cfg).metrics
                rows.append(
                    {
                        "point": cfg.hash(),
                        "data.nu": nu,
                        "model.activation": act,
                        "seed": seed,
                        "status": "done",
                        "error": "",
                        "regime": mt["regime"],
                        "norms.S1": mt["norms"]["S1"],
                        "norms.S12": mt["norms"]["S12"],
                        "norms.S2": mt["norms"]["S2"],
                        "norms.E": mt["norms"]["E"],
                        "rank.outliers": mt["rank"]["outliers"],
                        "rank.stable": mt["rank"]["stable"],
                    }
                )
    rows.append({**rows[0], "seed": 2, "status": "failed", "error": "boom <b>", "regime": "", "norms.S1": ""})
    with open(tmp_path / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, rows[0])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "sweep.json").write_text(
        json.dumps(
            _manifest(
                axes={"data.nu": nus, "model.activation": acts},
                seeds=2,
                mode="product",
                base_config={"seed": 0, "output": {"name": "nu<x>"}},
            )
        )
    )
    files = report.render_dir(tmp_path, ["html", "pdf"])
    html = files[0].read_text()
    page = Page(html)
    assert page.text["h1"] == ["nu<x>"] and "boom &lt;b&gt;" in html
    assert [c.split(". ")[0] for c in page.text["figcaption"]] == [
        "Regime over data.nu and model.activation",
        "‖S2‖ / ‖S1‖ over data.nu and model.activation",
        "outliers over data.nu and model.activation",
        "Trends over data.nu",
    ]
    assert page.text["headline"][0].startswith(
        "8 of 9 runs succeeded over data.nu ∈ {0.1, 0.6} × model.activation ∈ {relu, tanh}"
    )
    # the grid table: mean ratio ± sd over the two seeds of each point, and the most frequent regime
    ok = rows[:-1]
    table = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td><td class=\"num\">(\d+)</td><td>([^<]+)</td>"
        r"<td class=\"num\">([^< ]+) ± [^<]+</td><td class=\"num\">([^< ]+)",
        html,
    )
    assert len(table) == 4
    for nu_s, act, runs, regime, ratio, outliers in table:
        pts = [r for r in ok if r["data.nu"] == float(nu_s) and r["model.activation"] == act]
        assert int(runs) == len(pts) == 2
        assert _close(ratio, float(np.mean([r["norms.S2"] / r["norms.S1"] for r in pts])))
        assert _close(outliers, float(np.mean([r["rank.outliers"] for r in pts])))
        assert regime in {r["regime"] for r in pts}
    # the paper's trend: the data spike grows with nu relative to the residue spike
    ratio = {(float(t[0]), t[1]): float(t[4]) for t in table}
    assert all(ratio[(0.6, a)] > ratio[(0.1, a)] for a in acts)
    info = subprocess.run(["pdfinfo", str(files[1])], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) == page.pages == 4
    # one swept key: line plots with seed bands, a one-row regime strip
    one = [r for r in ok if r["model.activation"] == "relu"]
    with open(tmp_path / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, [k for k in one[0] if k not in ("model.activation", "norms.S12")])
        w.writeheader()
        w.writerows([{k: v for k, v in r.items() if k in w.fieldnames} for r in one])
    (tmp_path / "sweep.json").write_text(json.dumps(_manifest(axes={"data.nu": nus}, seeds=2)))
    page = Page(sweep_report.render_dir(tmp_path)[0].read_text())
    assert page.svgs == 2 and page.text["h1"] == [f"sweep {tmp_path.name}"]  # a one-row regime strip and the trends


def test_figure_size_bounded_for_large_dimensions():
    """Spectrum and data figures stay small however large d is (lines, not per-point markers)."""
    from gradrank.report import figures

    rng = np.random.default_rng(0)
    s = np.sort(rng.random(20000))[::-1]
    svg = figures.spectrum(np.r_[5.0, s], s, {"S1": 4.0, "S12": 1.0, "S2": 2.0, "E": 1.0}, 1.05)
    assert len(svg) < 300_000 and svg.count("<path") > 10
    lam = np.arange(1, 20001, dtype=float) ** -0.5
    assert len(figures.data_diagnostics(lam, 0.5, 10.0, 1000)) < 200_000


def test_analyze_report_flags(tmp_path):
    """analyze writes report.html by default, report.pdf with --pdf, neither with --no-report."""
    small = ["--set", "data.n=40", "--set", "data.d=50", "--set", "model.width=60", "-q"]
    runner = CliRunner()
    for flags, expect in (([], {"report.html"}), (["--pdf", "--no-report"], {"report.pdf"}), (["--no-report"], set())):
        out = tmp_path / "_".join(flags or ["default"])
        res = runner.invoke(app, ["analyze", *small, *flags, "-o", str(out)])
        assert res.exit_code == 0, res.output
        assert {p.name for p in out.glob("report.*")} == expect


def test_user_strings_in_figures_are_literal():
    """Swept keys and values reach matplotlib as plain text: '$' does not start (broken) mathtext."""
    import matplotlib

    from gradrank.report import figures

    before = dict(matplotlib.rcParams)
    xs, ys = ["$x^$", "b"], ["c$", "d"]
    assert "<svg" in figures.regime_map("k$ey", xs, "o$", ys, [["rank-two", None], ["mixed", "no-structure"]])
    assert "<svg" in figures.metric_map("k$ey", xs, "o$", ys, np.array([[0.5, 2.0], [np.nan, 1.0]]), None, "t$")
    assert "<svg" in figures.seed_bands("k$ey", xs, {"ratio": [("$a^$", np.ones(2), np.zeros(2)), ("b", np.ones(2), np.ones(2))]})
    assert dict(matplotlib.rcParams) == before  # the report style never leaks into the caller's matplotlib


def test_training_report_from_gradrank_train(tmp_path):
    """`gradrank train` writes trajectory.csv and its report shows the training page built from it."""
    out = tmp_path / "train"
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--set",
            "data.n=40",
            "--set",
            "data.d=50",
            "--set",
            "model.width=60",
            "--set",
            "train.steps=20",
            "--set",
            "train.lr=0.05",
            "-o",
            str(out),
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    with open(out / "trajectory.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    html = (out / "report.html").read_text()
    page = Page(html)
    assert page.text["h2"] == ["Key numbers", "Training", *SECTIONS[1:]] and page.svgs == 5 and page.pages == 5
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < first  # it trained
    assert f"{len(rows)} records up to step {int(rows[-1]['step'])}; train loss {first:.3g} → {last:.3g}" in html
    assert f"outliers {rows[0]['outliers']} → {rows[-1]['outliers']}" in html


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: {},
        lambda m: {**m, "singular_values": "many"},
        lambda m: {**m, "norms": {**m["norms"], "S1": "big"}},
        lambda m: [m],
    ],
)
def test_foreign_metrics_json_is_bad_input(tmp_path, edit):
    """A hand-edited metrics.json ends in exit 2 naming the file, and no report is written."""
    run_dir = tmp_path / "run"
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gradrank",
                "analyze",
                "--set",
                "data.n=30",
                "--set",
                "data.d=40",
                "--set",
                "model.width=50",
                "--no-report",
                "-q",
                "-o",
                str(run_dir),
            ]
        ).returncode
        == 0
    )
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    p = subprocess.run([sys.executable, "-m", "gradrank", "report", str(run_dir)], capture_output=True, text=True)
    assert p.returncode == 2 and "metrics.json" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (run_dir / "report.html").exists()
