"""Reports and runs that tell the truth: zipped axes as levels, facets instead of
averages, rounding-level zeros, chosen metrics, the penalised bulk edge, diverging runs kept,
failing figures reported, tall figures fitting the PDF page, every result kind rendered,
feature learning, CLI habits. Browser layout checks are in test_report_browser.py."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gradrank import api
from gradrank.cli.app import app
from gradrank.report import figures
from gradrank.report import render as report
from gradrank.report import sweep as sweep_report
from gradrank.report.common import rounding_floor

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["data.n=60", "data.d=80", "model.width=100"]


def _sets(items):
    return sum((["--set", s] for s in items), [])


def _cells(html: str, table_id: str) -> list[list[str]]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S) if "<td" in row]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _write_sweep(tmp: Path, axes: dict, mode: str, rows: list[dict], base: dict | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(tmp / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols)
        w.writeheader()
        w.writerows(rows)
    manifest = {
        "format": "gradrank-sweep/1",
        "schema": 1,
        "base_hash": "0" * 64,
        "axes": axes,
        "mode": mode,
        "seeds": 2,
        "command": "analyze",
        "keys": [*axes, "seed"],
        "base_config": base or {},
        "points": [],
    }
    (tmp / "sweep.json").write_text(json.dumps(manifest))
    return tmp


# ---------------------------------------------------------------------------- sweeps


@pytest.fixture(scope="module")
def zipped(tmp_path_factory):
    """A real zipped sweep (the regularizers sample at a small size, 2 seeds)."""
    root = tmp_path_factory.mktemp("zip")
    toml = (ROOT / "sample_configs" / "regularizers.toml").read_text()
    toml = toml.replace("n = 750", "n = 60").replace("d = 1000", "d = 80").replace("width = 1250", "width = 100")
    toml = toml.replace("seeds = 5", "seeds = 2")
    (root / "reg.toml").write_text(toml)
    res = CliRunner().invoke(app, ["sweep", str(root / "reg.toml"), "-o", str(root / "out"), "-j", "1"])
    assert res.exit_code == 0, res.output
    return root / "out"


def test_zipped_axes_are_labelled_levels(zipped):
    """Each zipped setting is one level: four rows of two seeds, never merged onto the first key."""
    html = (zipped / "report.html").read_text()
    levels = _cells(html, "levels")
    assert [r[0] for r in levels] == ["baseline", "weight_decay=0.05", "input_noise=0.3", "jacobian=1"]
    assert [r[1:] for r in levels] == [["0", "0", "0"], ["0.05", "0", "0"], ["0", "0.3", "0"], ["0", "0", "1"]]
    grid = _cells(html, "grid")
    assert [r[0] for r in grid] == [r[0] for r in levels] and all(r[1] == "2" for r in grid)
    # the sample config's own metrics: ‖S1‖/‖S2‖ first, each level's mean over its two seeds
    rows = [r for r in _rows(zipped / "results.csv") if r["status"] == "done"]
    for (wd, noise, jac), cells in zip([(0, 0, 0), (0.05, 0, 0), (0, 0.3, 0), (0, 0, 1)], grid):
        mine = [
            r
            for r in rows
            if float(r["regularizer.weight_decay"]) == wd
            and float(r["regularizer.input_noise"]) == noise
            and float(r["regularizer.jacobian"]) == jac
        ]
        assert len(mine) == 2
        want = np.mean([float(r["norms.S1"]) / float(r["norms.S2"]) for r in mine])
        assert math.isclose(float(cells[3].split(" ± ")[0]), want, rel_tol=5e-3)
        # the penalised bulk: at most two outliers in every run (Weyl), whatever the penalty
        assert all(int(r["rank.outliers"]) <= 2 for r in mine)
    headline = re.search(r'id="headline">(.*?)</p>', html, re.S).group(1)
    assert "zipped settings of regularizer.weight_decay, regularizer.input_noise, regularizer.jacobian" in headline
    assert "×" not in headline.split("regimes")[0]


def test_off_axis_keys_become_facets_never_averages(tmp_path):
    """A third swept key (loss.kind) gives one section per value; the table keeps every cell apart."""
    rows = []
    for nu in (0.1, 0.5):
        for act in ("relu", "tanh"):
            for loss in ("mse", "logistic"):
                for seed in (0, 1):
                    s1 = 1.0 + seed
                    s2 = (10.0 if loss == "logistic" else 1.0) * (1 + nu) * (2 if act == "tanh" else 1)
                    rows.append(
                        {"data.nu": nu, "model.activation": act, "loss.kind": loss, "seed": seed, "status": "done",
                         "regime": "rank-two", "norms.G": 5.0, "norms.S1": s1, "norms.S2": s2, "norms.E": 0.5,
                         "rank.outliers": 2}
                    )  # fmt: skip
    d = _write_sweep(
        tmp_path / "s",
        {"data.nu": [0.1, 0.5], "model.activation": ["relu", "tanh"], "loss.kind": ["mse", "logistic"]},
        "product",
        rows,
    )
    html = report.render_dir(d)[0].read_text()
    assert re.findall(r"<h2>(loss\.kind = \w+)</h2>", html) == ["loss.kind = mse", "loss.kind = logistic"]
    grid = _cells(html, "grid")
    assert len(grid) == 8
    for nu, act, loss, runs, regime, ratio, _ in grid:
        mine = [r for r in rows if str(r["data.nu"]) == nu and r["model.activation"] == act and r["loss.kind"] == loss]
        assert runs == "2" and len(mine) == 2
        want = np.mean([r["norms.S2"] / r["norms.S1"] for r in mine])
        assert math.isclose(float(ratio.split(" ± ")[0]), want, rel_tol=5e-3)
    assert html.count('<figure id="fig-regime-') == 2 and html.count('<figure id="fig-lines-') == 2


def test_rounding_level_values_are_undefined_and_chosen_metrics(tmp_path):
    """‖S1‖ = 2e-18 with ‖G‖ = 1 is zero: its ratio is 'undefined', never 1e17; --metrics picks the columns."""
    rows = [
        {"model.activation": act, "seed": s, "status": "done", "regime": "spike-dominated", "norms.G": 1.0,
         "norms.S1": s1, "norms.S2": 0.5, "norms.E": 0.25, "rank.outliers": 1}
        for act, s1 in (("relu", 0.2), ("quadratic", 2e-18)) for s in (0, 1)
    ]  # fmt: skip
    d = _write_sweep(tmp_path / "q", {"model.activation": ["relu", "quadratic"]}, "product", rows)
    assert sweep_report.metric_value(rows[2], "norms.S2/norms.S1", rounding_floor({})) != sweep_report.metric_value(
        rows[2], "norms.S2/norms.S1", 0.0
    )
    html = report.render_dir(d, metrics="norms.S2/norms.S1, norms.S1/norms.E, norms.S1")[0].read_text()
    head = re.findall(r"<th>([^<]*)</th>", html.split('id="grid"')[1].split("</thead>")[0])
    assert head[-3:] == ["‖S2‖ / ‖S1‖", "‖S1‖ / ‖E‖", "‖S1‖"]
    relu, quad = ([c.split(" ± ")[0] for c in row] for row in _cells(html, "grid"))
    assert float(relu[3]) == pytest.approx(2.5) and float(relu[4]) == pytest.approx(0.8)
    assert quad[3:] == ["undefined", "0", "0"]
    assert 'id="undefined">2 values undefined' in html


def test_metrics_flag_of_the_report_command(zipped, tmp_path):
    res = CliRunner().invoke(app, ["report", str(zipped), "--metrics", "norms.S1/norms.E", "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    rows = [r for r in _rows(zipped / "results.csv") if r["status"] == "done"]
    base = [
        r
        for r in rows
        if float(r["regularizer.weight_decay"]) == float(r["regularizer.input_noise"]) == 0 == float(r["regularizer.jacobian"])
    ]
    first = _cells(html, "grid")[0]
    assert first[0] == "baseline" and len(first) == 4
    assert math.isclose(
        float(first[3].split(" ± ")[0]), np.mean([float(r["norms.S1"]) / float(r["norms.E"]) for r in base]), rel_tol=5e-3
    )
    bad = CliRunner().invoke(app, ["report", str(zipped), "--metrics", "norms.S9", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "norms.S9" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_bands_of_positive_quantities_stay_above_zero():
    lo, hi = figures.band(np.array([1.0, 0.2]), np.array([0.5, 0.6]), positive=True)
    assert lo.tolist() == [0.5, 0.0] and hi.tolist() == [1.5, pytest.approx(0.8)]
    lo, _ = figures.band(np.array([-1.0]), np.array([0.5]), positive=False)
    assert lo.tolist() == [-1.5]


def test_sample_configs_choose_metrics_of_their_claim(zipped):
    """Every sweep sample config's output.metrics names results.csv columns; Figure 2's claim shows ‖S1‖/‖E‖."""
    import tomllib

    columns = list(_rows(zipped / "results.csv")[0])
    seen = {}
    for path in sorted((ROOT / "sample_configs").glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        if "sweep" in raw:
            text = raw.get("output", {}).get("metrics")
            assert text, f"{path.name} chooses no metrics"
            if raw["sweep"].get("command") == "onestep":  # columns eta.<eta>.<quantity> of its own etas
                etas = [f"{e:g}" for e in raw["onestep"]["eta"]]
                cols = [f"eta.{e}.{q}" for e in etas for q in ("test_error", "align_target", "align_spike", "align_residue")]
                seen[path.name] = sweep_report.parse_metrics(text, cols)
                continue
            seen[path.name] = sweep_report.parse_metrics(text, columns)
    assert "norms.S1/norms.E" in seen["fig2_activations.toml"]


# ---------------------------------------------------------------------------- bulk edge with a penalty


def test_bulk_edge_with_a_penalty_is_that_of_E_plus_the_penalty():
    """With weight decay the bulk is E + λ∇R: ‖·‖ from a dense SVD, the edge (1 + margin)·‖E + λ∇R‖,
    and at most two outliers (Weyl), where the edge of E alone counted more."""
    from gradrank.models import regularizers
    from gradrank.models.closed_form import gradient
    from gradrank.models.mu import compute_mu, decompose
    from gradrank.studies import analyze as analysis

    cfg = api.resolve_config(None, {"data.n": 60, "data.d": 80, "model.width": 100, "regularizer.weight_decay": 0.5})
    res = analysis.analyze(cfg)
    m = res.metrics
    cfg, ds, net = analysis.prepare(cfg)
    grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    reg = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, cfg.loss.kind)
    dec = decompose(grad, ds, net, compute_mu(cfg.analysis.mu, grad, ds, net, cfg.analysis.quadrature)[0])
    G = grad.dense() + reg
    B = G - dec.S1.dense() - dec.S12.dense() - dec.S2.dense()  # = E + reg
    s = torch.linalg.svdvals(G)
    nB = float(torch.linalg.matrix_norm(B, 2))
    assert m["norms"]["bulk"] == pytest.approx(nB, rel=1e-9)
    assert m["bulk_edge"] == pytest.approx((1 + cfg.analysis.edge_margin) * nB, rel=1e-9)
    assert m["rank"]["outliers"] == int((s > m["bulk_edge"]).sum()) <= 2
    assert float(s[2]) <= nB * (1 + 1e-9)  # Weyl: S1 + S12 + S2 has rank two
    assert int((s > (1 + cfg.analysis.edge_margin) * m["norms"]["E"]).sum()) > 2  # the old edge: too many


# ---------------------------------------------------------------------------- training


def test_the_issues_diverging_run_is_detected_saved_and_reported(tmp_path):
    """Loss 1.9 -> 3e256 without a NaN: divergence all the same; exit 0, saved, warned, diverged: true."""
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "gradrank", "train", *_sets(["data.n=200", "data.d=267", "model.width=333", "train.lr=2",
                                                            "train.steps=80"]), "-o", str(out)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "warning: diverged at step" in res.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["diverged"] is True and "exceeds 1e+06" in m["message"]
    rows = _rows(out / "trajectory.csv")
    loss = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(v) and v <= 1e6 * max(loss[0], 1) for v in loss) and len(rows) < 9
    assert m["train"]["steps_done"] == int(rows[-1]["step"]) < 80
    html = (out / "report.html").read_text()
    assert "warning: " + m["message"] in html and html.count("<svg") >= 4


def test_a_failing_figure_never_loses_a_run(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(figures, "trajectory", broken)
    tr = api.train(None, {"data.n": 40, "data.d": 50, "model.width": 60, "train.steps": 4})
    api.save(tr, tmp_path / "t")
    assert {"metrics.json", "trajectory.csv", "weights.npz", "report.html"} <= {p.name for p in (tmp_path / "t").iterdir()}
    html = (tmp_path / "t" / "report.html").read_text()
    assert "figure &#39;training trajectory&#39; could not be drawn (OverflowError" in html
    assert html.count("<svg") == 4  # the other figures are there


def test_feature_learning_and_mini_batch_columns_against_references(tmp_path):
    """feat_spike_1 against a numpy SVD of W - W0, batch_G at step 0 against autograd on the first batch."""
    from gradrank.models.closed_form import loss_and_residue
    from gradrank.rng import generator
    from gradrank.studies import analyze as analysis
    from gradrank.studies import train as tr_mod

    over = {"data.n": 80, "data.d": 60, "model.width": 70, "train.steps": 6, "train.record_every": 3,
            "train.optimizer": "sgd", "train.batch_size": 20, "train.lr": 0.05}  # fmt: skip
    tr = api.train(None, over)
    cfg = tr_mod.resolve(api.resolve_config(None, over))
    cfg, ds, net = analysis.prepare(cfg)
    last = tr.rows[-1]
    dW = (tr.W - net.W).numpy()
    v = np.linalg.svd(dW, full_matrices=False)[2][:2]  # top input-space directions
    q = ds.q.numpy()
    assert last["feat_spike_1"] == pytest.approx(abs(v[0] @ q), abs=1e-4)
    assert last["feat_spike_2"] == pytest.approx(abs(v[1] @ q), abs=1e-4)
    B = np.linalg.qr(ds.index_directions.numpy().T)[0]
    assert last["feat_index_1"] == pytest.approx(np.linalg.norm(B.T @ v[0]), abs=1e-4)
    assert math.isnan(tr.rows[0]["feat_spike_1"])  # W = W0 at step 0: no direction yet
    idx = torch.randperm(ds.n, generator=generator(cfg.seed, "batches"))[:20]
    W = net.W.clone().requires_grad_(True)
    f = net.gamma * (net.act.f(ds.X[idx] @ W.T) @ net.a)
    loss = loss_and_residue(cfg.loss.kind, f, ds.y[idx])[0].mean()
    (g,) = torch.autograd.grad(loss, W)
    assert tr.rows[0]["batch_G"] == pytest.approx(float(torch.linalg.matrix_norm(g, 2)), rel=1e-9)
    assert math.isnan(last["batch_G"])  # the last record takes no step


def test_trajectory_legends_name_every_line_in_words():
    cols = {c: np.linspace(1, 2, 5) for c in ["step", *tr_cols()]}
    panels = figures.trajectory_panels(cols)
    for title, lines in panels:
        labels = [lab for _, lab, *_ in lines if lab is not None]
        assert len(set(labels)) == len(labels)
        assert not [lab for lab in labels if "_" in lab and "X_B" not in lab and "W − W₀‖_F" not in lab]  # no column names
        styles = [(c, ls, lw) for name, _, c, ls, lw in lines if not re.fullmatch(r"s\d+", name) or name in ("s1", "s2")]
        assert len(set(styles)) == len(styles), title  # G and S1 (and every pair) look different
    named = {name for _, lines in panels for name, lab, *_ in lines if lab}
    assert {"G", "S1", "align_residue_1", "align_spike_2", "feat_index_1", "batch_E", "s1", "s2"} <= named


def tr_cols():
    from gradrank.studies.train import columns

    return [c for c in columns(4) if c != "step"]


# ---------------------------------------------------------------------------- PDF pages


def _pdf_words(pdf: Path) -> list[tuple[int, float, float, str]]:
    """(page, yMin, yMax, word) from pdftotext -bbox."""
    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    words, page = [], 0
    for line in out.splitlines():
        if "<page " in line:
            page += 1
        w = re.search(r'yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">([^<]*)<', line)
        if w:
            words.append((page, float(w.group(1)), float(w.group(2)), w.group(3)))
    return words


def test_tall_alignment_figure_fits_its_pdf_page(tmp_path):
    """top_k = 50: the 50-row heatmap, its caption and the footer share one page, the caption above the footer,
    and the page is blank between them (nothing of the figure printed over the footer)."""
    out = tmp_path / "k50"
    res = CliRunner().invoke(app, ["analyze", *_sets([*SMALL, "analysis.top_k=50"]), "--pdf", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    pdf = out / "report.pdf"
    words = _pdf_words(pdf)
    (page, cap_top, _, _), *_ = [w for w in words if w[3] == "Alignment"]
    cap_bottom = max(y1 for p, y0, y1, _ in words if p == page and y0 >= cap_top - 1)
    footer = min(y0 for p, y0, _, w in words if p == page and w == "page" and y0 > cap_top)
    assert cap_top < footer
    subprocess.run(["pdftoppm", "-png", "-r", "36", "-f", str(page), "-l", str(page), str(pdf), str(tmp_path / "p")], check=True)
    from PIL import Image

    img = np.asarray(Image.open(next(tmp_path.glob("p*.png"))).convert("L"), float)
    scale = img.shape[0] / 841.89  # A4 height in points
    assert (img[int(80 * scale) : int(cap_top * scale) - 2] < 240).sum() > 4000  # the figure is drawn above its caption
    assert (img[int(cap_bottom * scale) + 3 : int(footer * scale) - 2] > 250).all()


# ---------------------------------------------------------------------------- every result kind


def test_scaling_and_regpath_directories_get_reports(tmp_path):
    runner = CliRunner()
    sc = tmp_path / "sc"
    res = runner.invoke(
        app, ["scaling", "--n", "30,45,60", "--seeds", "2", *_sets(["data.nu=0.3"]), "--pdf", "-o", str(sc), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert (sc / "report.pdf").stat().st_size > 10_000
    (sc / "report.html").unlink()
    res = runner.invoke(app, ["report", str(sc), "--format", "html,pdf"])
    assert res.exit_code == 0, res.output
    html = (sc / "report.html").read_text()
    payload = json.loads((sc / "scaling.json").read_text())
    assert '<figure id="fig-scaling">' in html and "Growth with n on log–log axes" in html
    table = _cells(html, "comparison")
    fits = payload["fits"]
    for row in table:
        q = payload["comparison"][table.index(row)]["quantity"]
        if fits.get(q):
            assert math.isclose(float(row[1]), fits[q]["slope"], rel_tol=2e-3, abs_tol=1e-3)
    rp = tmp_path / "rp"
    res = runner.invoke(app, ["regpath", *_sets(SMALL), "--grid", "weight_decay=0,0.1", "--grid", "input_noise=0,0.3",
                              "--seeds", "0,1", "--pdf", "-o", str(rp), "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    html = (rp / "report.html").read_text()
    doc = json.loads((rp / "path.json").read_text())
    head = re.search(r'id="headline">(.*?)</p>', html, re.S).group(1)
    for name, summ in doc["summary"].items():
        assert summ["verdict"].replace("||", "‖") in head
    grid = _cells(html, "grid")
    rows = _rows(rp / "path.csv")
    for cells in grid:
        mine = [r for r in rows if r["regularizer"] == cells[0] and float(r["strength"]) == float(cells[1])]
        assert math.isclose(float(cells[3]), np.mean([float(r["S1"]) for r in mine]), rel_tol=5e-3)
    assert (rp / "report.pdf").is_file() and subprocess.run(
        ["pdfinfo", str(rp / "report.pdf")], capture_output=True
    ).returncode == 0


def test_train_pdf_flag(tmp_path):
    res = CliRunner().invoke(app, ["train", *_sets([*SMALL, "train.steps=3"]), "--pdf", "-o", str(tmp_path / "t"), "-q"])
    assert res.exit_code == 0, res.output
    info = subprocess.run(["pdfinfo", str(tmp_path / "t" / "report.pdf")], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= 4


# ---------------------------------------------------------------------------- command line habits


def _gradrank(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "gradrank", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip


def test_version_and_debug_anywhere(tmp_path):
    from gradrank._version import __version__

    res = _gradrank("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"gradrank {__version__}"
    for argv in (["report", str(tmp_path / "none"), "--debug"], ["--debug", "report", str(tmp_path / "none")]):
        res = _gradrank(*argv)
        assert res.returncode == 2 and res.stderr.strip() == f"error: {tmp_path / 'none'}: no such directory", res.stderr


def test_every_command_has_an_example_in_its_help():
    runner = CliRunner()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) >= 9
    for name in names:
        text = runner.invoke(app, [name, "--help"]).output
        examples = text.split("Examples:", 1)[1].strip().splitlines() if "Examples:" in text else []
        assert examples and all(line.strip().startswith("gradrank ") for line in examples), name
        assert any(line.strip().startswith(f"gradrank {name}") for line in examples), name


def test_batch_output_is_neither_wrapped_nor_padded_and_warns(tmp_path):
    """No terminal: the config hash stays on its line, no trailing spaces; top_k above min(n, d, m) is warned."""
    res = _gradrank("analyze", *_sets([*SMALL, "analysis.top_k=500"]), "--no-report", "-o", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.match(r"gradrank analyze  n=60 d=80 m=100 .* config [0-9a-f]{16}$", lines[0]), lines[0]
    assert all(line == line.rstrip() for line in lines)
    warn = [line for line in lines if "analysis.top_k = 500 exceeds min(n, d, m) = 60" in line]
    assert len(warn) == 1 and len(warn[0]) > 80  # one line, not wrapped at 80 columns


def test_file_with_only_X_says_its_targets_are_synthetic(tmp_path):
    np.savez(tmp_path / "x.npz", X=np.random.default_rng(0).normal(size=(50, 30)))
    res = _gradrank("decompose", "--data", str(tmp_path / "x.npz"), "-o", str(tmp_path / "d"))
    assert res.returncode == 0, res.stderr
    assert "has no targets y: synthetic targets were drawn" in res.stdout
    m = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert m["data"]["synthetic_targets"] == "multi_index (triple)"
    html = (tmp_path / "d" / "report.html").read_text()
    assert "has no targets y: synthetic targets were drawn" in html and 'data-key="data.synthetic_targets"' in html
    np.savez(tmp_path / "xy.npz", X=np.random.default_rng(0).normal(size=(50, 30)), y=np.ones(50))
    res = _gradrank("decompose", "--data", str(tmp_path / "xy.npz"), "-o", str(tmp_path / "e"), "-q")
    assert "synthetic" not in (tmp_path / "e" / "report.html").read_text()


def test_generate_then_decompose_as_the_readme_says(tmp_path):
    """README: with data.center = false, decompose of a generated file sees analyze's X, y, q and W, so G and its
    singular values agree; the split differs only through μ (empirical instead of population)."""
    base = [*SMALL, "data.nu=0.3"]
    a = api.analyze(
        None, {s.split("=")[0]: float(s.split("=")[1]) if "." in s.split("=")[1] else int(s.split("=")[1]) for s in base}
    )
    assert _gradrank("generate", "-o", str(tmp_path / "g.npz"), *_sets(base)).returncode == 0
    d = api.analyze(None, {"data.source": "file", "data.path": str(tmp_path / "g.npz"), "data.center": False,
                           "model.width": 100})  # fmt: skip
    assert d.metrics["norms"]["G"] == pytest.approx(a.metrics["norms"]["G"], rel=1e-10)
    assert np.allclose(d.arrays["singular_values"], a.arrays["singular_values"], rtol=1e-9, atol=1e-12)
    assert d.config.analysis.mu == "empirical" and a.config.analysis.mu == "population"
    assert d.metrics["norms"]["S1"] != pytest.approx(a.metrics["norms"]["S1"], rel=1e-6)
    readme = (ROOT / "README.md").read_text()
    for key in ("`X`", "`y`", "`q`", "`X_test`", "`y_test`", "data.center = false", "empirical"):
        assert key in readme


def test_sweep_checks_its_report_metrics_before_running(tmp_path):
    res = CliRunner().invoke(app, ["sweep", "--grid", "data.nu=0.1,0.2", "--metrics", "a/b/c", "-o", str(tmp_path / "s")])
    assert res.exit_code == 2 and "'a/b/c' is neither a column nor a ratio" in res.output
    assert not (tmp_path / "s").exists()
