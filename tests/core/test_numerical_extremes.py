"""Numerical extremes: strong spikes (nu = 2), fast bulk decay (alpha = 3), tiny and huge zeta,
logistic loss at large margins, float32. The property: the numbers are right (against float64
references computed independently), or the run says it cannot vouch for them (metrics["trust"],
the summary's warnings), or it refuses with exit 2. Never NaN where a stable formula exists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _reliability import record
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.core import engine
from gradrank.models.closed_form import gradient, loss_and_residue
from gradrank.studies import analyze as analysis

SIZE = ["data.n=120", "data.d=160", "model.width=200", "output.report=false"]


def run(*sets, seed=0):
    cfg = config.load(sets=[*SIZE, *sets], seed=seed)
    cfg, ds, net = analysis.prepare(cfg)
    res = analysis.analyze_state(cfg, ds, net)
    return res, ds, net


def dense_reference(ds, net, kind="mse"):
    """Singular values of G by a dense float64 SVD, from float64 copies of the same data and weights."""
    ds64, net64 = ds.to("cpu", torch.float64), net.to("cpu", torch.float64)
    return torch.linalg.svdvals(gradient(net64, ds64.X, ds64.y, kind).dense()).numpy()


def spectrum_error(res, ref) -> float:
    """max_k |s_k - s_ref_k| / max(s_ref_k, ||E||): the error on the scale outliers are judged at."""
    s = np.array(res.metrics["singular_values"])
    scale = np.maximum(ref[: len(s)], res.metrics["norms"]["E"])
    return float(np.max(np.abs(s - ref[: len(s)]) / scale))


# ---------------------------------------------------------------------------- stable formulas


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logistic_stable_at_large_margins(dtype):
    """softplus / sigmoid forms: exact limits at margins +-1e4 (naive log(1 + exp) overflows there),
    and agreement with autograd of the naive formula where that is finite."""
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=dtype)
    f = torch.tensor([1e4, 1e4, -1e4, 3.0], dtype=dtype)
    loss, r = loss_and_residue("logistic", f, y)
    assert torch.isfinite(loss).all() and torch.isfinite(r).all()
    assert loss[0] == 0 and r[0] == 0  # margin +1e4: nothing to learn
    assert loss[1] == 1e4 and r[1] == 1  # margin -1e4: loss = -y f, residue = -y
    naive = torch.log1p(torch.exp(-y * f))
    assert torch.isinf(naive[1])  # what the stable form avoids
    fm = torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64, requires_grad=True)
    ym = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    torch.log1p(torch.exp(-ym * fm)).sum().backward()
    lm, rm = loss_and_residue("logistic", fm.detach(), ym)
    assert torch.allclose(rm, fm.grad, rtol=1e-12) and torch.allclose(lm, torch.log1p(torch.exp(-ym * fm.detach())), rtol=1e-12)
    record("numerics", f"logistic loss at margins +-1e4 ({str(dtype)[6:]})", "finite; exact limits; matches autograd")


def test_logistic_large_margin_run_is_finite():
    res, ds, net = run("loss.kind=logistic", "data.nu=2", "model.c=100")
    m = res.metrics
    assert np.isfinite(m["loss"]) and np.isfinite(m["singular_values"]).all() and m["trust"]["ok"], m["trust"]
    assert spectrum_error(res, dense_reference(ds, net, "logistic")) < 1e-8
    record("numerics", "logistic, nu = 2, c = 100 (margins ~1e6)", "finite, trusted, spectrum = dense SVD to 1e-8")


# ---------------------------------------------------------------------------- extremes: right or flagged


@pytest.mark.parametrize(
    "sets", [["data.nu=2"], ["data.alpha=3"], ["data.nu=2", "data.alpha=3"], ["data.nu=2", "model.activation=tanh"]]
)
def test_extremes_float64_right(sets):
    """float64: trusted, identity exact, and the reported spectrum equals a dense SVD (the Gram
    route falls back to an SVD of the factor when s_1/s_k is too large for it)."""
    res, ds, net = run(*sets)
    m = res.metrics
    assert m["trust"]["ok"], m["trust"]["warnings"]
    assert m["identity_error"] < 1e-12
    err = spectrum_error(res, dense_reference(ds, net))
    assert err < 1e-8, err
    record(
        "numerics",
        f"{', '.join(sets)} (float64)",
        f"trusted; identity {m['identity_error']:.0e}; spectrum vs dense SVD {err:.0e}",
    )


@pytest.mark.parametrize(
    "sets", [["data.nu=2"], ["data.alpha=3"], ["data.nu=2", "model.activation=tanh"], ["data.nu=2", "loss.kind=logistic"]]
)
def test_extremes_float32_right_or_flagged(sets):
    """float32: finite; identity error relative to ||G|| at float32 level; and the singular values
    either agree with the float64 dense SVD to 1e-3 on the bulk-edge scale, or trust says no."""
    res, ds, net = run(*sets, "compute.dtype=float32")
    m = res.metrics
    assert np.isfinite(m["singular_values"]).all() and all(np.isfinite(v) for v in m.norms.to_dict().values())
    assert m["identity_error"] < 1e-4
    err = spectrum_error(res, dense_reference(ds, net, res.config.loss.kind))
    assert m["trust"]["ok"] == (not m["trust"]["warnings"])
    assert err < 1e-3 or not m["trust"]["ok"], (err, m["trust"])
    outcome = "trusted" if m["trust"]["ok"] else "flagged: " + "; ".join(w.split(":")[0] for w in m["trust"]["warnings"])
    record("numerics", f"{', '.join(sets)} (float32)", f"finite; {outcome}; spectrum error {err:.0e}")


def test_tiny_zeta():
    res, ds, net = run("data.zeta=1e-200")
    m = res.metrics
    assert m["trust"]["ok"] and m["norms"]["S2"] < 1e-150 and m["regime"] != "spike-dominated"
    assert spectrum_error(res, dense_reference(ds, net)) < 1e-8
    record("numerics", "zeta = 1e-200", "trusted, spike terms ~0, regime not spike")


def test_huge_zeta_flagged_not_confident():
    """zeta = 1e50: G's spectrum cannot resolve ||E|| (~1e-48 s_1) in float64. The run must not
    count rounding noise as outliers, and must say that outliers cannot be counted."""
    res, _, _ = run("data.zeta=1e50")
    m = res.metrics
    assert np.isfinite(m["singular_values"]).all()
    assert m["rank"]["outliers"] == 1  # only s_1 is above the numerical floor
    assert not m["trust"]["ok"] and not m["trust"]["checks"]["resolution"]
    assert any("resolution" in w for w in m["trust"]["warnings"])
    record("numerics", "zeta = 1e50", "finite; 1 outlier (not the 7 noise values); trust flag 'resolution'")


@pytest.mark.parametrize("setting,dtype", [("data.zeta=1e120", "float64"), ("data.zeta=1e25", "float32")])
def test_overflowing_gradient_refused(tmp_path, setting, dtype):
    res = CliRunner().invoke(
        app,
        [
            "analyze",
            "--set",
            setting,
            "--set",
            f"compute.dtype={dtype}",
            *[a for s in SIZE for a in ("--set", s)],
            "-o",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 2 and "data.zeta" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.output
    assert not any(tmp_path.iterdir())
    record("numerics", f"{setting} ({dtype}): gradient beyond the dtype's range", f"exit 2: {res.stderr.strip()}")


# ---------------------------------------------------------------------------- trust flags


def test_trust_flags_fire_and_show(tmp_path):
    """Each check fails when its quantity is out of bounds, and the summary and metrics.json say so."""
    res, ds, net = run()
    cfg, m = res.config, res.metrics
    from gradrank.core.trust import trust as trust_of

    def check(identity=m.identity_error, residual=m.spectral_residual, mu_err=0.0, s=m.singular_values):
        return trust_of(cfg.analysis, cfg.compute.dtype, m.norms, s, identity, residual, mu_err)

    assert check().ok and check() == m.trust
    assert not check(mu_err=1e-3).checks.quadrature
    assert not check(identity=1e-6).checks.identity
    assert not check(residual=1.0).checks.spectrum
    assert not check(s=[np.nan] + m.singular_values[1:]).checks.finite
    # a residual that is really measured: perturb the spectrum and recompute it
    from gradrank.core.spectra import Spectrum

    grad = gradient(net, ds.X, ds.y, "mse")
    G = grad.dense()
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    good = Spectrum(s, U[:, :8], s[:8], Vh[:8].T, float((s * s).sum()))
    bad = Spectrum(s, U[:, :8], s[:8] * (1 + 1e-2), Vh[:8].T, float((s * s).sum()))
    assert engine.spectral_residual(grad.mv, grad.rmv, good, m["norms"]["E"]) < 1e-12
    assert engine.spectral_residual(grad.mv, grad.rmv, bad, m["norms"]["E"]) > 1e-3
    # end to end: an impossible identity tolerance is reported, not hidden
    out = tmp_path / "run"
    r = CliRunner().invoke(
        app, ["analyze", *[a for s in SIZE for a in ("--set", s)], "--set", "analysis.identity_tol=1e-300", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stdout and "identity error" in r.stdout
    trust = json.loads((out / "metrics.json").read_text())["trust"]
    assert not trust["ok"] and not trust["checks"]["identity"] and trust["warnings"]
    record(
        "numerics",
        "trust checks fed out-of-bound values; analysis.identity_tol = 1e-300 end to end",
        "each check fails; summary prints 'warning: ...'; metrics.json trust.ok = false",
    )
