"""The exact split G = S1 + S12 + S2 + E, mu, rank-one norms and exact spectra against dense references."""

import math

import numpy as np
import pytest
import torch

from gradrank.core.spectra import spectrum
from gradrank.models.closed_form import gradient
from gradrank.models.mu import compute_mu, decompose, mu_population
from gradrank.studies import analyze as analysis


def _decomposed(cfg):
    cfg, ds, net = analysis.prepare(cfg)
    grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    mu, err = compute_mu(cfg.analysis.mu, grad, ds, net, cfg.analysis.quadrature)
    return ds, net, grad, decompose(grad, ds, net, mu, err)


def _identity_error(ds, grad, dec):
    G = grad.dense()
    terms = dec.S1.dense() + dec.S12.dense() + dec.S2.dense() + dec.E_dense(ds.X_B)
    return float((G - terms).norm() / G.norm())


@pytest.mark.parametrize(
    "sets",
    [
        ("data.nu=0.3",),
        ("data.nu=0.6", "model.planted=1.0", "model.activation=tanh"),
        ("data.alpha=0.8", "data.basis=random", "data.spike=eigvec", "model.activation=gelu", "loss.kind=logistic"),
        ("data.latent=rademacher", "model.planted=1.0", "model.planted_vector=signs", "analysis.mu=empirical"),
    ],
)
def test_identity_spiked_and_planted(small_cfg, sets):
    ds, net, grad, dec = _decomposed(small_cfg(*sets))
    assert _identity_error(ds, grad, dec) < 1e-10


def test_identity_file_data(tmp_path, small_cfg):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 30)) @ np.diag(np.linspace(2, 0.1, 30)) + 5.0
    np.savez(tmp_path / "d.npz", X=X, y=rng.standard_normal(50))
    cfg = small_cfg("data.source=file", f'data.path="{tmp_path / "d.npz"}"', m=40)
    ds, net, grad, dec = _decomposed(cfg)
    assert cfg.analysis.mu == "empirical"
    assert _identity_error(ds, grad, dec) < 1e-10
    # spike extraction: X = X_B + zeta z q^T with z of unit empirical variance, X_B q = 0
    assert torch.allclose(ds.X, ds.X_B + ds.zeta * torch.outer(ds.z, ds.q), atol=1e-12)
    assert float(ds.z.pow(2).mean()) == pytest.approx(1.0)
    assert float((ds.X_B @ ds.q).abs().max()) < 1e-10


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "sigmoid", "erf", "softplus"])
def test_quadrature_mu_matches_monte_carlo(small_cfg, activation):
    """Population mu_j = E_x sigma'(w_j^T x) by quadrature vs a large Monte Carlo mean over fresh x."""
    cfg = small_cfg(f"model.activation={activation}", "data.nu=0.5", "data.alpha=0.5", m=20)
    ds, net, grad, dec = _decomposed(cfg)
    g = torch.Generator().manual_seed(7)
    N = 200_000
    lam = ds.eigenvalues
    Xmc = torch.randn(N, ds.d, generator=g, dtype=torch.float64) * lam.sqrt() + ds.zeta * torch.outer(
        torch.randn(N, generator=g, dtype=torch.float64), ds.q
    )
    samples = net.act.d1(Xmc @ net.W.T)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(N)
    assert bool(((dec.mu - mc).abs() <= 4 * se + 1e-12).all())
    assert dec.mu_error < 1e-8


@pytest.mark.parametrize("points", [64, 128])
def test_quadrature_at_any_allowed_order_is_finite_and_silent(small_cfg, points):
    """tanh under a strong spike needs more than Gauss-Hermite: at the largest allowed order too the
    refinement stays within finite Hermite rules (no overflow warning, no NaN) and the
    panel rule gives the same mu."""
    import warnings

    ds, net, grad, dec = _decomposed(small_cfg("model.activation=tanh", "data.nu=1.5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mu, err = mu_population(ds, net, points)
    assert bool(torch.isfinite(mu).all()) and err < 1e-10
    assert torch.allclose(mu, dec.mu, rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [1, 2, 64, 256, 360])
def test_hermite_rule_is_gauss_hermite(k):
    """Our Golub-Welsch rule: exact for the moments E g^(2j) = (2j-1)!! up to degree 2k-1, odd
    moments 0, and the nodes and weights of numpy's hermgauss (a dense eigensolver) to rounding."""
    from gradrank.models.mu import _hermite_rule

    g, w = _hermite_rule.__wrapped__(k)
    assert g.shape == w.shape == (k,) and bool(np.all(np.diff(g) > 0)) and bool(np.all(w > 0))
    for j in range(min(k, 12)):  # degree 2j <= 2k - 1
        assert (w * g ** (2 * j)).sum() == pytest.approx(math.prod(range(1, 2 * j, 2)), rel=1e-13)
        assert abs((w * g ** (2 * j + 1)).sum()) < 1e-13 * math.prod(range(1, 2 * j + 2, 2))
    x, v = np.polynomial.hermite.hermgauss(k)
    assert np.allclose(g, math.sqrt(2) * x, rtol=0, atol=1e-13)
    assert np.allclose(w, v / math.sqrt(math.pi), rtol=1e-11, atol=0)


def test_quadratic_activation_kills_residue_spike(small_cfg):
    ds, net, grad, dec = _decomposed(small_cfg("model.activation=quadratic", "data.nu=0.4"))
    assert float(dec.mu.abs().max()) < 1e-12
    assert dec.S1.norm() < 1e-12 and dec.S12.norm() < 1e-12
    assert dec.S2.norm() > 1e-3


def test_relu_mu_is_one_half(small_cfg):
    ds, net, grad, dec = _decomposed(small_cfg())
    assert torch.allclose(dec.mu, torch.full_like(dec.mu, 0.5), atol=1e-14)


def test_rank_one_norms_equal_dense_operator_norms(small_cfg):
    ds, net, grad, dec = _decomposed(small_cfg("data.nu=0.4", "model.activation=tanh"))
    for term in (dec.S1, dec.S12, dec.S2):
        assert term.norm() == pytest.approx(float(torch.linalg.matrix_norm(term.dense(), 2)), rel=1e-12)


@pytest.mark.parametrize("n,d,m", [(40, 60, 70), (90, 60, 70), (40, 60, 30)])
def test_exact_spectrum_matches_dense_svd(n, d, m):
    """Factored path (n < min(d, m)) and dense-Gram path against torch.linalg.svd."""
    g = torch.Generator().manual_seed(n + d + m)
    L = torch.randn(n, d, generator=g, dtype=torch.float64)
    R = torch.randn(n, m, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, m, dtype=torch.float64)
    A = 0.3 * L.T @ R
    sp = spectrum(L, R, 0.3, 5)
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    assert sp.values.shape == S.shape
    assert float((sp.values - S).abs().max()) <= 1e-10 * float(S[0])
    assert sp.fro2 == pytest.approx(float(A.pow(2).sum()), rel=1e-12)
    for i in range(5):  # singular vectors agree up to sign
        assert float((sp.U[:, i] @ U[:, i]).abs()) == pytest.approx(1.0, abs=1e-8)
        assert float((sp.V[:, i] @ Vh[i]).abs()) == pytest.approx(1.0, abs=1e-8)


def test_metrics_match_dense_recomputation(small_cfg):
    """metrics.json's norms and singular values against dense SVDs of G and E."""
    cfg = small_cfg("data.nu=0.4")
    res = analysis.analyze(cfg)
    ds, net, grad, dec = _decomposed(cfg)
    G, E = grad.dense(), dec.E_dense(ds.X_B)
    sG, sE = torch.linalg.svdvals(G), torch.linalg.svdvals(E)
    m = res.metrics
    assert m["norms"]["G"] == pytest.approx(float(sG[0]), rel=1e-10)
    assert m["norms"]["E"] == pytest.approx(float(sE[0]), rel=1e-10)
    assert m["norms"]["G_fro"] == pytest.approx(float(G.norm()), rel=1e-10)
    assert np.allclose(m["singular_values"], sG[: cfg.analysis.top_k].numpy(), rtol=1e-9)
    assert m["identity_error"] < 1e-12
    assert m["rank"]["stable"] == pytest.approx(float(G.norm() ** 2 / sG[0] ** 2), rel=1e-9)
