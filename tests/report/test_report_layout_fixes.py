"""What looking at every report kind in Chromium and as PDF pages found (a walk-through of every report,
second pass): each test pins one fix with a value that was wrong before it (a word placed past the
page margin, a caption split from its rows, a legend over the data, a one-label log axis, ...)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report_browser import browser  # noqa: F401  (its Chromium fixture)
from typer.testing import CliRunner

from gradrank.cli.app import app
from gradrank.report import common as report_common
from gradrank.report import figures
from gradrank.report import render as report
from gradrank.report import run as run_report

SMALL = ["data.n=60", "data.d=80", "model.width=100"]


def _sets(items):
    return sum((["--set", s] for s in items), [])


def _words(pdf: Path) -> list[tuple[int, float, float, float, float, str]]:
    """Every word of the PDF in content order: (page, xMin, yMin, xMax, yMax, text), via pdftotext -bbox."""
    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    words, page = [], 0
    for line in out.splitlines():
        if "<page " in line:
            page += 1
            width = float(re.search(r'width="([\d.]+)"', line).group(1))
        m = re.search(r'xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>', line)
        if m:
            words.append((page, *(float(m.group(i)) for i in range(1, 5)), m.group(5)))
    _words.width = width
    return words


def _write_sweep(root: Path, axes: dict, rows: list[dict], command="analyze", mode="product", provenance=None) -> Path:
    """test_report_tells_the_truth's sweep directory, with its command and provenance set."""
    from test_report_tells_the_truth import _write_sweep as write

    write(root, axes, mode, rows)
    manifest = json.loads((root / "sweep.json").read_text())
    manifest.update({"command": command}, **({"provenance": provenance} if provenance else {}))
    (root / "sweep.json").write_text(json.dumps(manifest))
    return root


def _zipped_rows():
    """The regularizers sample's shape: three zipped keys, two seeds, four metrics."""
    levels = [(0.0, 0.0, 0.0), (0.05, 0.0, 0.0), (0.0, 0.3, 0.0), (0.0, 0.0, 1.0)]
    return [
        {"regularizer.weight_decay": wd, "regularizer.input_noise": no, "regularizer.jacobian": ja, "seed": s,
         "status": "done", "regime": "rank-two", "norms.G": 2.0, "norms.S1": 1.234567 + s, "norms.S2": 0.0456789 * (1 + s),
         "norms.E": 0.5, "rank.outliers": 1 + s}
        for wd, no, ja in levels for s in (0, 1)
    ]  # fmt: skip


# ---------------------------------------------------------------------------- PDF pages


@pytest.fixture(scope="module")
def analyze_pdf(tmp_path_factory):
    out = tmp_path_factory.mktemp("an") / "run"
    res = CliRunner().invoke(app, ["analyze", *_sets(SMALL), "--pdf", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    return out / "report.pdf"


def test_config_section_names_stay_with_their_keys_in_pdf_columns(analyze_pdf):
    """Each config section's name is on the page and in the column of its first key (the PDF had
    'advise' alone at the foot of the second column, its keys at the top of the third)."""
    words = _words(analyze_pdf)
    cfg = run_report.run_context(analyze_pdf.parent, json.loads((analyze_pdf.parent / "metrics.json").read_text()))
    sections = cfg["config_sections"]
    start = next(i for i, w in enumerate(words) if w[5] == "exactly).")  # the end of the section's intro
    words = words[start:]
    checked = 0
    for name, rows in sections:
        first_key = rows[0][0].split("_")[0]
        keys = [w for w in words if w[5].startswith(first_key)]
        # the section's name directly above one of its first key's occurrences: same page and column
        above = [
            (c, k) for k in keys for c in words if c[5] == name and c[0] == k[0] and abs(c[1] - k[1]) < 3 and 0 < k[2] - c[2] < 20
        ]
        assert above, (name, [w for w in words if w[5] == name], keys)
        checked += 1
    assert checked == len(sections) >= 10


@pytest.fixture(scope="module")
def layers_dir(tmp_path_factory):
    """A small `gradrank layers --model mlp` run whose layers get MiniLM's long names."""
    out = tmp_path_factory.mktemp("layers") / "run"
    sets = ["data.n=60", "data.d=80", "model.width=50", "model.depth=4"]
    res = CliRunner().invoke(app, ["layers", "--model", "mlp", *_sets(sets), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "layers.json").read_text())
    names = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.output.dense",
             "encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense"]  # fmt: skip
    for layer, name in zip(doc["layers"], names):
        layer["name"] = name
    (out / "layers.json").write_text(json.dumps(doc))
    return out


def test_layer_table_fits_the_pdf_page(layers_dir):
    """Every cell of the per-layer table lies inside the page's text width: the MiniLM table ran
    past the right margin (regime and identity error cut off), numbers wrapped as '5.98e-' / '07'."""
    report.render_dir(layers_dir, formats=("pdf",))
    doc = json.loads((layers_dir / "layers.json").read_text())
    words = _words(layers_dir / "report.pdf")
    right = _words.width - 15 * 72 / 25.4  # the @page right margin
    start = max(i for i, w in enumerate(words) if w[5] == "row" and words[i - 1][5] == "One")
    table = [w for w in words[start:] if w[5] != "Provenance"][: 40 * len(doc["layers"])]
    assert max(w[3] for w in table) <= right + 1
    idents = [w[5] for w in words[start:] if re.fullmatch(r"\d(\.\d+)?e-\d\d", w[5])]
    assert len(idents) >= len(doc["layers"])  # each identity error printed whole, on one line
    html = report.render_dir(layers_dir)[0].read_text()
    assert "layer (encoder.layer.0.…)" in html  # the shared prefix said once, in the header


def test_layer_table_shows_rounding_level_norms_as_zero(layers_dir):
    """The readout's ‖S2‖, ‖E‖ are rounding noise (~1e-18 of ‖G‖, zero in exact arithmetic: one
    output): the table shows 0, not 3.29e-18; real values keep their digits."""
    html = report.render_dir(layers_dir)[0].read_text()
    doc = json.loads((layers_dir / "layers.json").read_text())
    body = html.split('id="layer-table"', 1)[1].split("</table>", 1)[0]
    rows = [re.findall(r'<td class="num">([^<]*)</td>', r) for r in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)][1:]
    floor = report_common.rounding_floor({"compute": {"dtype": doc["dtype"]}})
    for layer, cells in zip(doc["layers"], rows):
        G = layer["norms"]["G"]
        for value, cell in zip([layer["norms"][k] for k in ("S1", "S2", "E")], cells[2:5]):
            assert cell == ("0" if value <= floor * G else f"{value:.3g}"), (layer["name"], value, cell)
    readout = doc["layers"][-1]["norms"]
    assert readout["S2"] < 1e-12 * readout["G"] and rows[-1][3] == "0"


def test_sweep_figures_follow_the_summary_on_page_one(tmp_path):
    """A sweep PDF's first page was the summary alone; the regime map now follows it there."""
    root = _write_sweep(tmp_path / "z", {"regularizer.weight_decay": [0.0, 0.05, 0.0, 0.0],
                                          "regularizer.input_noise": [0.0, 0.0, 0.3, 0.0],
                                          "regularizer.jacobian": [0.0, 0.0, 0.0, 1.0]}, _zipped_rows(), mode="zip")  # fmt: skip
    report.render_dir(root, formats=("pdf",))
    words = _words(root / "report.pdf")
    first = " ".join(w[5] for w in words if w[0] == 1)
    assert "Figure 1. Regime over" in first


# ---------------------------------------------------------------------------- sweep content


def test_onestep_sweep_over_eta_shows_each_points_test_error(tmp_path):
    """`sweep --command onestep --grid onestep.eta=...`: each point has only its own eta.<η>.*
    columns, so the per-η metrics were defined at one point each (three one-dot panels, '12 values
    undefined' blamed on rounding). The default metric is now the point's test error."""
    rows = [
        {"onestep.eta": eta, "seed": s, "status": "done", "kind": "onestep", "best_test_error": 3.0 + eta / 10 + s / 100,
         f"eta.{eta:g}.test_error": 3.0 + eta / 10 + s / 100}
        for eta in (0.0, 1.0, 4.0) for s in (0, 1)
    ]  # fmt: skip
    root = _write_sweep(tmp_path / "os", {"onestep.eta": [0.0, 1.0, 4.0]}, rows, command="onestep")
    html = report.render_dir(root)[0].read_text()
    assert 'id="undefined"' not in html and "undefined" not in html.split('id="grid"', 1)[1]
    assert "test error (best η of the point)" in html
    cells = re.findall(r'<td class="num">([^<]*)</td>', html.split('id="grid"', 1)[1].split("</table>", 1)[0])
    assert cells[1::2] == [f"{3.0 + e / 10 + 0.005:.3g} ± 0.0071" for e in (0.0, 1.0, 4.0)]
    assert 'id="legend"' not in html and "<th>regime</th>" not in html  # no regimes in a one-step sweep


def test_seed_bands_share_one_legend_and_log_axis_past_a_decade():
    """Lines that are levels of one key share one legend above the panels (a legend sat on the
    relu band); a positive quantity spanning more than a decade gets a log axis whose bands stop at
    its bottom; the x label is written once; a level undefined everywhere is named in its panel."""
    xs = [0.0, 0.3, 0.6]
    series = {
        "‖S2‖ / ‖S1‖": [("relu", np.array([0.07, 0.3, 2.2]), np.array([0.02, 0.06, 1.3])),
                        ("tanh", np.array([0.04, 0.2, 0.9]), np.array([0.015, 0.07, 0.27])),
                        ("quadratic", np.full(3, np.nan), np.full(3, np.nan))],
        "outliers": [("relu", np.array([1.0, 1.5, 1.5]), np.array([0, 0.7, 0.7])),
                     ("tanh", np.array([1.0, 1.5, 2.0]), np.zeros(3)),
                     ("quadratic", np.array([0.0, 1.0, 1.0]), np.zeros(3))],
    }  # fmt: skip
    with figures.collect() as made:
        figures.seed_bands("data.nu", xs, series, "model.activation")
    (fig,) = made
    ratio, outl = fig.axes[:2]
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["relu", "tanh", "quadratic"]
    assert ratio.get_yscale() == "log" and outl.get_yscale() == "linear"
    bottom = ratio.get_ylim()[0]
    assert bottom > 0 and all(p.get_paths()[0].vertices[:, 1].min() >= bottom * (1 - 1e-9) for p in ratio.collections)
    assert [ax.get_xlabel() for ax in fig.axes] == ["", ""] and fig.get_supxlabel() == "data.nu"
    assert any(t.get_text() == "undefined: quadratic" for t in ratio.texts)


def test_log_axes_never_carry_a_single_label():
    """A log axis with one decade tick in view (a loss from 1.9 to 0.18 read only '1') also labels 2
    and 5; one spanning decades keeps decade labels only."""
    for lo, hi, expect in (
        (0.18, 1.9, {"0.2", "0.5", "1"}),
        (1.1, 1.6, {"1.2", "1.4"}),
        (1e-3, 10, {"0.001", "0.01", "0.1", "1", "10"}),
    ):
        fig, ax = figures.new_figure(figsize=(3, 2))
        ax.semilogy([0, 1], [lo, hi])
        figures._plain_log_labels(fig)
        y0, y1 = ax.get_ylim()
        y = ax.yaxis
        shown = {
            text
            for locs, fmt in ((y.get_majorticklocs(), y.get_major_formatter()), (y.get_minorticklocs(), y.get_minor_formatter()))
            for v in locs
            if y0 <= v <= y1 and (text := fmt(v))
        }
        assert expect <= shown and len(shown) >= 2, (lo, hi, shown)
        if hi / lo > 1000:
            assert shown == expect  # no minor labels over decades (they overlap)


# ---------------------------------------------------------------------------- figures


def test_scaling_panels_carry_their_slopes_and_no_legend_over_bands():
    """Slopes in each panel's title (3 digits, as the table: '+0.50' read as agreeing with a
    prediction the table said missed), one legend for the symbols above the panels."""
    rows = [{"n": n, "S1": 2.0 * n**0.498, "E": n**-0.5} for n in (100, 200, 400) for _ in (0, 1)]
    fits = {"S1": {"slope": 0.498, "intercept": np.log(2.0), "ci_low": 0.4979, "ci_high": 0.4981},
            "E": {"slope": -0.5, "intercept": 0.0, "ci_low": -0.6, "ci_high": -0.4}}  # fmt: skip
    with figures.collect() as made:
        figures.scaling(rows, fits, {"S1": 0.5, "E": -0.5}, ["S1", "E"])
    (fig,) = made
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert fig.axes[0].get_title() == "‖S1‖\nfit +0.498 [+0.498, +0.498]\npredicted +0.5"


def test_scatter_colour_bar_is_labelled_and_vector():
    """The one-step scatter's colour bar had no label and was an embedded raster (missing from the PDF)."""
    x = np.array([0.1, 0.2, 0.3])
    with figures.collect() as made:
        svg = figures.scatter([("r = 1", "|cos|", x, x, np.log2(1 + np.array([1.0, 4.0, 16.0])))], "test error", "log₂(1 + η)")
    assert "<image" not in svg
    assert made[0].axes[-1].get_ylabel() == "log₂(1 + η)"


def test_depth_profile_counts_are_integers_and_names_keep_whole_parts():
    names = [f"encoder.layer.{i}.attention.{p}" for i in range(2) for p in ("self.query", "output.dense")]
    with figures.collect() as made:
        figures.depth_profile(names, [0, 1, 2, 1], {k: [0.25] * 4 for k in ("S1", "S12", "S2", "E")}, {"residue": [0.5] * 4})
    ax0, _, ax2 = made[0].axes
    made[0].canvas.draw() if hasattr(made[0].canvas, "draw") else None
    ticks = [t for t in ax0.get_yticks() if ax0.get_ylim()[0] <= t <= ax0.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert [t.get_text() for t in ax2.get_xticklabels()] == [n[len("encoder.layer.") :] for n in names]
    assert ax2.get_xlabel() == "layer (names after encoder.layer.)"
    assert figures.layer_labels(["m.blocks.attention.self.query", "m.blocks.output.dense"], width=12) == (
        "m.blocks.",
        ["…self.query", "output.dense"],
    )


def test_fitted_bulk_decay_states_its_r2():
    """A fitted α over a spectrum that is no power law (generate then decompose: R² = 0.70) said so nowhere."""
    lam = np.linspace(5, 0.1, 300)
    with figures.collect() as made:
        figures.data_diagnostics(lam, 0.81, 9.6, 300, 0.698)
    labels = [t.get_text() for t in made[0].axes[0].get_legend().get_texts()]
    assert "fit k^(−α), α = 0.81, R² = 0.70" in labels


def test_scaling_table_names_its_controls_and_left_aligns_words(tmp_path):
    """The comparison table read '‖zeta‖', '‖a_mu‖'; the runs table right-aligned the regime."""
    out = tmp_path / "sc"
    res = CliRunner().invoke(
        app, ["scaling", "--n", "40,60", "--seeds", "1", *_sets(["data.d=50", "model.width=60"]), "-o", str(out), "-q"]
    )
    assert res.exit_code == 0, res.output
    html = (out / "report.html").read_text()
    comp = html.split('id="comparison"', 1)[1].split("</table>", 1)[0]
    assert "<th>ζ</th>" in comp and "<th>‖a∘μ‖</th>" in comp and "zeta" not in comp and "a_mu" not in comp
    runs = html.split('id="runs"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<td class="num">[a-z-]+</td>', runs) == [] and re.search(
        r"<td>(rank-two|residue-dominated|spike-dominated|no-structure|mixed)</td>", runs
    )


# ---------------------------------------------------------------------------- Chromium layout


CELL_LINES_JS = """(sel) => [...document.querySelectorAll(sel)].map(e => {
  const r = document.createRange(); r.selectNodeContents(e);
  const tops = new Set([...r.getClientRects()].map(q => Math.round(q.top)));
  return [e.textContent, tops.size];
})"""

ROW_HEIGHTS_JS = """(sel) => [...document.querySelectorAll(sel)].map(e => e.getBoundingClientRect().height)"""


@pytest.mark.browser
def test_numbers_stay_on_one_line_and_tables_are_not_stretched(browser, tmp_path):  # noqa: F811
    """At 1280 px the zipped sweep's table broke '2.03 ±' over '0.046'; a provenance table with fewer
    rows than its neighbour had its rows stretched to the neighbour's height."""
    prov = {"seed": 0, "device": "cpu", "device_name": "cpu", "dtype": "float64", "threads": 2,
            "platform": "Linux-6.18.44-fc-v1098-x86_64-with-glibc2.36", "versions": {"python": "3.11.7"}}  # fmt: skip
    root = _write_sweep(tmp_path / "z", {"regularizer.weight_decay": [0.0, 0.05, 0.0, 0.0],
                                          "regularizer.input_noise": [0.0, 0.0, 0.3, 0.0],
                                          "regularizer.jacobian": [0.0, 0.0, 0.0, 1.0]}, _zipped_rows(), mode="zip",
                        provenance=prov)  # fmt: skip
    report.render_dir(root, metrics="norms.S1/norms.S2, norms.S1/norms.E, norms.S2/norms.E, rank.outliers")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto((root / "report.html").as_uri())
        cells = page.evaluate(CELL_LINES_JS, "#grid td.num")
        assert len(cells) == 4 * 5 and all(lines == 1 for _, lines in cells), cells
        assert any("±" in text for text, _ in cells)
        heights = page.evaluate(ROW_HEIGHTS_JS, "table.versions tr")
        seed_row = page.evaluate(ROW_HEIGHTS_JS, "table.provenance tr")[1]
        assert heights and max(heights) < 1.5 * seed_row, (heights, seed_row)
    finally:
        page.close()


BREAKS_JS = """(sel) => [...document.querySelectorAll(sel)].flatMap(th => {
  const chars = [], walk = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
  for (let n; (n = walk.nextNode());) for (let i = 0; i < n.length; i++) {
    const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
    chars.push([n.data[i], Math.round(r.getBoundingClientRect().top)]);
  }
  const bad = [];
  for (let i = 1; i < chars.length; i++) if (chars[i][1] > chars[i - 1][1] && chars[i - 1][0] !== "_") bad.push(th.textContent);
  return bad;
})"""


@pytest.mark.browser
def test_config_keys_break_only_after_underscores(browser, analyze_pdf):  # noqa: F811
    """At 1280 px the config tables broke 'teacher_activatio' / 'n' and 'planted_normaliz' / 'e'."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto((analyze_pdf.parent / "report.html").as_uri())
        assert page.locator("table.config-section th").count() > 80
        assert page.evaluate(BREAKS_JS, "table.config-section th") == []
        texts = page.evaluate("() => [...document.querySelectorAll('table.config-section th')].map(e => e.textContent)")
        assert "teacher_activation" in texts and "planted_normalize" in texts  # the keys read whole
    finally:
        page.close()


def test_long_zipped_levels_leave_room_for_the_axes():
    """Five zipped keys ('nu=0.3, alpha=0.5, activation=tanh, index_sees_spike=True') as vertical
    one-line ticks collapsed the panels (constrained_layout gave up, labels over the x label): one
    line per key keeps each panel drawn."""
    import warnings

    xs = ["baseline", "nu=0.3, alpha=0.5, activation=tanh, index_sees_spike=True", "nu=0.5, weight_decay=0.01"]
    series = {f"test error (η={e})": [(f"test error (η={e})", np.array([0.19, 0.14, 0.3]), np.zeros(3))] for e in (0, 2, 0.5)}
    with warnings.catch_warnings(), figures.collect() as made:
        warnings.simplefilter("error")  # 'constrained_layout not applied because axes sizes collapsed to zero'
        figures.seed_bands("data.nu + data.alpha + model.activation", xs, series)
    ax = made[0].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()][1] == "nu=0.3,\nalpha=0.5,\nactivation=tanh,\nindex_sees_spike=True"
    assert ax.get_position().height > 0.15  # the panel keeps a sixth of the figure's height


def test_spectrum_marks_no_term_at_rounding_level():
    """quadratic: mu = E[sigma'] = 0, so S1 and S12 vanish in exact arithmetic (their computed norms
    are ~1e-16·‖G‖): the spectrum figure draws no line for them, while relu keeps all four."""
    import gradrank

    small = {"data.n": 150, "data.d": 200, "model.width": 250}
    labels = {}
    for act in ("quadratic", "relu"):
        res = gradrank.analyze(overrides={**small, "model.activation": act})
        lines = res.figures()["spectrum"].axes[0].get_lines()
        labels[act] = {ln.get_label().split(" =")[0] for ln in lines if not ln.get_label().startswith("_")}
        if act == "quadratic":
            assert 0 < res.metrics.norms.S1 < 1e-12 * res.metrics.norms.G
    assert labels["quadratic"] == {"‖S2‖", "‖E‖"}
    assert labels["relu"] == {"‖S1‖", "‖S12‖", "‖S2‖", "‖E‖"}
