"""Theory predictions (gradrank.studies.theory.predict), the log-log fit with its CI, and the scaling study."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.core import fits
from gradrank.report import render
from gradrank.results import scaling as scaling_out
from gradrank.studies import scaling, theory


def cfg(*sets):
    return config.load(sets=list(sets))


def test_ntk_relu_exponents():
    p = theory.predict(cfg("data.nu=0.3"))
    assert p.exponents["S1"] == pytest.approx(0.0)
    assert p.exponents["S12"] == pytest.approx(2 * 0.3 - 0.5)  # z^T r through f's spike part
    assert p.exponents["S2"] == pytest.approx(2 * 0.3 - 0.5)  # coherent part: NTK mean residue != 0
    assert p.exponents["E"] == pytest.approx(-0.5)
    assert p.ratios["S2/S1"] == pytest.approx(0.1)
    assert p.valid and p.regime == "rank-two"


def test_balanced_outer_weights_remove_coherent_s2_part():
    """With sum_j a_j = 0 the NTK mean residue vanishes: S2 keeps only its random part n^(nu - 1/2)."""
    p = theory.predict(cfg("data.nu=0.3", "model.outer=balanced"))
    assert p.exponents["S2"] == pytest.approx(0.3 - 0.5)


def test_mf_shifts_gamma_terms_by_minus_half():
    ntk, mf = theory.predict(cfg("data.nu=0.2")), theory.predict(cfg("data.nu=0.2", "model.scaling=mf"))
    for k in ("S1", "E"):
        assert mf.exponents[k] - ntk.exponents[k] == pytest.approx(-0.5)
    assert mf.regime == ntk.regime


def test_activation_zero_mu_and_constant_derivative():
    quad = theory.predict(cfg("model.activation=quadratic", "data.nu=0.1"))
    assert quad.exponents["S1"] is None and quad.exponents["S12"] is None
    assert quad.regime == "no-structure"
    assert theory.predict(cfg("model.activation=quadratic", "data.nu=0.3")).regime == "spike-dominated"
    lin = theory.predict(cfg("model.activation=linear"))
    assert lin.exponents["S2"] is None and lin.exponents["E"] is None


def test_alpha_separates_relu_from_smooth_activations():
    """Fig. 2 mechanism: ||S1||/||E|| ~ n^(-a/2)... for relu but n^(+a/2) for tanh (sd sigma'_perp ~ s^2)."""
    a = 5 / 9
    relu = theory.predict(cfg(f"data.alpha={a}", "data.nu=0.125"))
    tanh = theory.predict(cfg(f"data.alpha={a}", "data.nu=0.125", "model.activation=tanh"))
    assert relu.ratios["S1/E"] == pytest.approx(0.5 - a / 2)
    assert tanh.ratios["S1/E"] == pytest.approx(0.5 + a / 2)
    iso_relu, iso_tanh = theory.predict(cfg("data.nu=0.125")), theory.predict(cfg("data.nu=0.125", "model.activation=tanh"))
    assert iso_relu.ratios["S1/E"] == iso_tanh.ratios["S1/E"]


@pytest.mark.parametrize(
    "nu,regime", [(0.1, "residue-dominated"), (0.25, "rank-two"), (0.45, "rank-two"), (0.5, "spike-dominated")]
)
def test_regime_thresholds(nu, regime):
    assert theory.predict(cfg(f"data.nu={nu}")).regime == regime


def test_validity_flags():
    assert not theory.predict(cfg("data.nu=0.6")).valid
    planted = theory.predict(cfg("data.nu=0.3", "model.planted=1.0"))
    assert not planted.valid and planted.inputs["kappa"] == pytest.approx(0.05)


def test_fit_ci_covers_true_slope_at_nominal_rate():
    """OLS slope with t-based 95% CI over noisy power laws: coverage within binomial limits."""
    rng = np.random.default_rng(0)
    n = np.repeat([100, 200, 400, 800], 3)
    hits, trials = 0, 300
    for _ in range(trials):
        y = 2.0 * n**0.37 * np.exp(0.2 * rng.standard_normal(n.size))
        f = fits.fit_loglog(n, y)
        hits += f.ci_low <= 0.37 <= f.ci_high
    assert 0.90 * trials <= hits <= 0.99 * trials
    exact = fits.fit_loglog(n, 3.0 * n**-0.5)
    assert exact.slope == pytest.approx(-0.5, abs=1e-12) and exact.r2 == pytest.approx(1.0)
    assert fits.fit_loglog([100, 100, 100], [1, 2, 3]) is None
    assert fits.fit_loglog([100, 200, 400], [0.0, 0.0, 0.0]) is None


def test_scaling_study_recovers_exact_exponents(tmp_path):
    """zeta = n^nu and ||a o mu|| = sqrt(m)/2 (relu) have exact exponents nu and 1/2; every run
    keeps d/n, m/n fixed; the study's files carry the config and its hash."""
    base = config.load(
        sets=["data.n=60", "data.d=80", "model.width=100", "data.nu=0.35", "analysis.top_k=2", "output.name=<b>scaling</b>"]
    )
    res = scaling.study(base, [60, 120, 240], 2)
    assert res.fits["zeta"].slope == pytest.approx(0.35, abs=1e-9)
    assert res.fits["a_mu"].slope == pytest.approx(0.5, abs=1e-9)
    assert all(r["d"] * 60 == r["n"] * 80 and r["m"] * 60 == r["n"] * 100 for r in res.rows)
    assert {r["seed"] for r in res.rows} == {0, 1}
    out = scaling_out.write(tmp_path / "sc", res)
    render.render_dir(out)
    payload = json.loads((out / "scaling.json").read_text())
    assert payload["config_hash"] == base.hash() and len(payload["rows"]) == 6
    assert (out / "scaling.csv").read_text().count("\n") == 7
    html = (out / "report.html").read_text()
    assert "&lt;b&gt;scaling&lt;/b&gt;" in html and "<b>scaling</b>" not in html


def test_scaling_controls_agree_when_sizes_round():
    """m = round(n·m0/n0) is not exactly ∝ n (167, 333 at n = 100, 200 from 750/1250): the a∘mu
    control's prediction is sqrt(m)'s slope at those sizes, so the exact control still agrees."""
    base = config.load(sets=["data.n=750", "data.d=100", "model.width=1250", "analysis.top_k=2"])
    res = scaling.study(base, [60, 100, 200], 1)
    ms = [r["m"] for r in res.rows]
    assert ms == [100, 167, 333]
    row = {c["quantity"]: c for c in res.comparison}
    assert row["a_mu"]["predicted"] == pytest.approx(res.fits["a_mu"].slope, abs=1e-12)
    assert row["a_mu"]["predicted"] != pytest.approx(0.5, abs=1e-4)
    assert row["a_mu"]["agree"] is True and row["zeta"]["agree"] is True


def test_cli_theory_json_and_no_torch():
    code = (
        "import sys; from gradrank.cli.app import app\n"
        "try: app(['theory', '--json', '--set', 'data.nu=0.3'], prog_name='gradrank')\n"
        "except SystemExit as e: assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'theory imported torch'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["exponents"]["E"] == pytest.approx(-0.5)


def test_cli_bad_input_exit_2(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["scaling", "--n", "10,abc", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--n" in r.output
    r = runner.invoke(app, ["scaling", "--n", "100", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and not (tmp_path / "x").exists()
    r = runner.invoke(app, ["theory", "--set", "data.source=digits"])
    assert r.exit_code == 2 and "data.source" in r.output
    r = runner.invoke(app, ["theory", "--set", "model.scaling=mff"])
    assert r.exit_code == 2 and "model.scaling" in r.output


def test_cli_scaling_writes_run_dir(tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "scaling",
            "--n",
            "40,80",
            "--seeds",
            "2",
            "--set",
            "data.n=40",
            "--set",
            "data.d=50",
            "--set",
            "model.width=60",
            "-o",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "zeta" in r.output and (tmp_path / "s" / "scaling.json").is_file()
    assert math.isfinite(json.loads((tmp_path / "s" / "scaling.json").read_text())["fits"]["S1"]["slope"])
