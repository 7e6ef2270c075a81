"""Gaps of the mutation audit (docs/testing.md), analysis side: the empirical mu against its definition,
every measure against a numpy recomputation from the same weights, the regime rules at their
boundaries, the trust flag of a full run whose spectrum is wrong, input noise with the population mu,
and the working dtype. Every reference here is numpy (float64) or a Monte Carlo mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradrank import api, config
from gradrank.core import engine
from gradrank.core import measures as metrics
from gradrank.studies import analyze as analysis

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = ["data.n=60", "data.d=80", "model.width=100"]

# numpy activations (sigma, sigma'), written out again rather than taken from the registry
NP_ACT = {
    "relu": (lambda u: np.maximum(u, 0), lambda u: (u > 0).astype(float)),
    "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "sigmoid": (lambda u: 1 / (1 + np.exp(-u)), lambda u: np.exp(-u) / (1 + np.exp(-u)) ** 2),
}


def _cfg(*sets, seed=0):
    return config.load(sets=[*SIZE, *sets], seed=seed)


def _numpy_state(cfg):
    """Data, weights and every factor of the gradient recomputed in numpy from prepare()'s tensors."""
    cfg, ds, net = analysis.prepare(cfg)
    X, y, X_B = (t.double().numpy() for t in (ds.X, ds.y, ds.X_B))
    q, z, W, a = (t.double().numpy() for t in (ds.q, ds.z, net.W, net.a))
    f_act, d_act = NP_ACT[cfg.model.activation]
    n, m = X.shape[0], W.shape[0]
    gamma = 1 / math.sqrt(m) if cfg.model.scaling == "ntk" else 1 / m
    Z = X @ W.T
    f = gamma * f_act(Z) @ a
    r = f - y
    Sp = d_act(Z)
    G = gamma / n * X.T @ (r[:, None] * a[None, :] * Sp)
    return dict(cfg=cfg, ds=ds, net=net, X=X, y=y, X_B=X_B, q=q, z=z, W=W, a=a, gamma=gamma, r=r, Sp=Sp, G=G, n=n, m=m)


def _abs_cos(M, v):
    return np.abs(v @ M) / (np.linalg.norm(M, axis=0) * np.linalg.norm(v))


# ---------------------------------------------------------------------------- empirical mu


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_empirical_mu_is_the_sample_mean_of_sigma_prime(activation):
    """mu = mean over the n samples of sigma'(X W^T), and the term norms that follow from it (the identity
    holds for any mu, so only this pins it down)."""
    s = _numpy_state(_cfg(f"model.activation={activation}", "analysis.mu=empirical", "data.nu=0.3"))
    res = analysis.analyze(s["cfg"])
    mu = s["Sp"].mean(0)
    assert np.allclose(res.arrays["mu"], mu, rtol=1e-12, atol=1e-14)
    assert res.metrics["mu_mean"] == pytest.approx(mu.mean(), rel=1e-12)
    gn, r, a, zeta = s["gamma"] / s["n"], s["r"], s["a"], s["ds"].zeta
    S1 = gn * np.linalg.norm(s["X_B"].T @ r) * np.linalg.norm(a * mu)
    S12 = gn * zeta * abs(s["z"] @ r) * np.linalg.norm(a * mu)
    spike_right = a * ((s["Sp"] - mu).T @ (s["z"] * r))
    S2 = gn * zeta * np.linalg.norm(spike_right)
    E = gn * s["X_B"].T @ (r[:, None] * a[None, :] * (s["Sp"] - mu))
    norms = res.metrics["norms"]
    assert norms["S1"] == pytest.approx(S1, rel=1e-10)
    assert norms["S12"] == pytest.approx(S12, rel=1e-10)
    assert norms["S2"] == pytest.approx(S2, rel=1e-10)
    assert norms["E"] == pytest.approx(np.linalg.norm(E, 2), rel=1e-9)
    assert np.allclose(res.arrays["spike_right"], spike_right, rtol=1e-10, atol=1e-14)


def test_decompose_of_user_arrays_uses_the_empirical_mu():
    """api.decompose (real data's default): mu is the mean of sigma' over the user's samples."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((50, 30)), rng.standard_normal(50)
    W, a = rng.standard_normal((40, 30)) / math.sqrt(30), rng.choice([-1.0, 1.0], 40)
    res = api.decompose(X, y, W, a, overrides={"model.activation": "tanh"})
    Xc = X - X.mean(0)  # data.center = true
    assert np.allclose(res.arrays["mu"], (1 - np.tanh(Xc @ W.T) ** 2).mean(0), rtol=1e-12)


# ---------------------------------------------------------------------------- measures


def test_every_measure_against_numpy():
    """Alignments (left and right), energies, captured norms, directions, shares, ranks and the edge
    of a full analysis, each recomputed in numpy from a dense SVD of the same gradient."""
    s = _numpy_state(
        _cfg("analysis.mu=empirical", "data.nu=0.45", "model.planted=1.0", "model.planted_vector=signs", "analysis.top_k=6")
    )
    m = analysis.analyze(s["cfg"]).metrics
    G, r, a, q, X_B, z = s["G"], s["r"], s["a"], s["q"], s["X_B"], s["z"]
    U, sv, Vt = np.linalg.svd(G)
    k = 6
    mu = s["Sp"].mean(0)
    res_dir = X_B.T @ r
    spike_right = a * ((s["Sp"] - mu).T @ (z * r))
    # singular vectors are determined (up to sign) where the values are separated
    sep = [i for i in range(k) if min(sv[i - 1] - sv[i] if i else np.inf, sv[i] - sv[i + 1]) > 1e-6 * sv[0]]
    assert len(sep) >= 4
    al = m["alignment"]
    for key, M, v in (
        ("residue", U, res_dir),
        ("spike", U, q),
        ("right_mu", Vt.T, a * mu),
        ("right_spike", Vt.T, spike_right),
    ):
        ref = _abs_cos(M[:, :k], v)
        assert np.allclose(np.array(al[key])[sep], ref[sep], atol=1e-7), key
    fro2 = (sv**2).sum()
    P = np.linalg.qr(np.stack([res_dir, q], 1))[0]
    assert m["energy"]["predicted_subspace"] == pytest.approx(np.linalg.norm(P.T @ G) ** 2 / fro2, rel=1e-9)
    assert m["energy"]["top2_subspace"] == pytest.approx((sv[:2] ** 2).sum() / fro2, rel=1e-9)
    assert m["directions"]["residue"] == pytest.approx(np.linalg.norm(G.T @ res_dir) / np.linalg.norm(res_dir), rel=1e-9)
    assert m["directions"]["spike"] == pytest.approx(np.linalg.norm(G.T @ q), rel=1e-9)
    E = s["gamma"] / s["n"] * X_B.T @ (r[:, None] * a[None, :] * (s["Sp"] - mu))
    sE = np.linalg.svd(E, compute_uv=False)
    edge = max(1.05 * sE[0], sv[0] * np.finfo(float).eps ** 0.5)
    assert m["bulk_edge"] == pytest.approx(edge, rel=1e-9)
    n_out = int((sv[:k] > edge).sum())
    assert m["rank"]["outliers"] == n_out >= 2
    Uo = U[:, :n_out]
    assert m["captured"]["residue"] == pytest.approx(np.linalg.norm(Uo.T @ res_dir) / np.linalg.norm(res_dir), abs=1e-7)
    assert m["captured"]["spike"] == pytest.approx(np.linalg.norm(Uo.T @ q), abs=1e-7)
    for key in ("S1", "S12", "S2"):
        assert m["shares"][key] == pytest.approx(m["norms"][key] ** 2 / fro2, rel=1e-9)
    assert m["shares"]["E"] == pytest.approx((sE**2).sum() / fro2, rel=1e-9)
    assert m["norms"]["E_fro"] == pytest.approx(np.linalg.norm(E), rel=1e-9)
    # ranks: stable, effective (Roy-Vetterli entropy of s / sum s), energy fractions
    pos = sv[sv > 0]
    p = pos / pos.sum()
    rk = m["rank"]
    assert rk["stable"] == pytest.approx(fro2 / sv[0] ** 2, rel=1e-9)
    assert rk["effective"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-7)
    cum = np.cumsum(sv**2) / fro2
    assert rk["energy90"] == int(np.searchsorted(cum, 0.9) + 1)
    assert rk["energy99"] == int(np.searchsorted(cum, 0.99) + 1)
    # the regime from the documented rules on these numpy values
    res_cos, spk_cos = list(_abs_cos(U[:, :k], res_dir)), list(_abs_cos(U[:, :k], q))
    expect = _regime(list(sv[:k]), res_cos, spk_cos, m["captured"]["residue"], m["captured"]["spike"], edge, 0.5, 5.0)
    assert (m["regime"], m["outlier_labels"]) == expect


def test_rank_measures_of_a_known_spectrum():
    """Effective rank of equal values is their number; stable rank fro^2 / s_1^2; energy counts."""
    vals = torch.tensor([3.0, 3.0, 3.0, 3.0, 0.0], dtype=torch.float64)
    rk = metrics.rank_measures(vals, float((vals**2).sum()), 0)
    assert rk["effective"] == pytest.approx(4.0, rel=1e-12)
    assert rk["stable"] == pytest.approx(4.0, rel=1e-12)
    assert (rk["energy90"], rk["energy99"]) == (4, 4)
    vals = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)  # energies 16, 4, 1, 1 of 22
    rk = metrics.rank_measures(vals, 22.0, 0)
    p = np.array([4, 2, 1, 1]) / 8
    assert rk["effective"] == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-12)
    assert (rk["energy90"], rk["energy99"]) == (2, 4)  # cumulative 16/22 = .727, 20/22 = .909, 21/22 = .955
    assert rk["stable"] == pytest.approx(22 / 16)


# ---------------------------------------------------------------------------- regime rules


def _regime(s, res, spk, cap_res, cap_spk, edge, thr, dom):
    """The rules of gradrank.core.measures' docstring, written out again."""
    out = [v for v in s if v > edge]
    labels = []
    for i in range(len(out)):
        if res[i] >= thr and res[i] >= spk[i]:
            labels.append("residue")
        elif spk[i] >= thr and spk[i] > res[i]:
            labels.append("spike")
        else:
            labels.append("mixed")
    if not out:
        return "no-structure", labels
    if len(out) == 1 or s[0] > dom * s[1]:
        return {"residue": "residue-dominated", "spike": "spike-dominated"}.get(labels[0], "mixed"), labels
    return ("rank-two" if cap_res >= thr and cap_spk >= thr else "mixed"), labels


CASES = [  # (s, res, spk, cap_res, cap_spk, edge) -> regime, with thr = 0.5, dom = 5
    (([1.0, 0.5], [0.9, 0.1], [0.1, 0.9], 0.9, 0.9, 0.6), "residue-dominated"),  # one outlier
    (([1.0, 0.5], [0.9, 0.1], [0.1, 0.9], 0.9, 0.9, 1.0), "no-structure"),  # s_1 == edge is not an outlier
    (([1.0, 0.5], [0.1, 0.9], [0.9, 0.1], 0.9, 0.9, 0.6), "spike-dominated"),
    (([1.0, 0.5], [0.5, 0.1], [0.5, 0.9], 0.9, 0.9, 0.6), "residue-dominated"),  # tie at the threshold: residue
    (([1.0, 0.5], [0.49, 0.1], [0.3, 0.9], 0.9, 0.9, 0.6), "mixed"),  # aligned with neither
    (([1.0, 0.5], [0.3, 0.1], [0.5, 0.9], 0.9, 0.9, 0.6), "spike-dominated"),  # spike at the threshold
    (([1.0, 0.8], [0.9, 0.1], [0.1, 0.9], 0.9, 0.9, 0.1), "rank-two"),
    (([1.0, 0.2], [0.9, 0.1], [0.1, 0.9], 0.9, 0.9, 0.1), "rank-two"),  # s_1 == 5 s_2 exactly: still comparable
    (([1.0, 0.19], [0.9, 0.1], [0.1, 0.9], 0.9, 0.9, 0.1), "residue-dominated"),  # s_1 > 5 s_2
    (([1.0, 0.8], [0.9, 0.1], [0.1, 0.9], 0.9, 0.49, 0.1), "mixed"),  # span misses q: mixed, not rank-two
    (([1.0, 0.8], [0.9, 0.1], [0.1, 0.9], 0.49, 0.9, 0.1), "mixed"),
    (([1.0, 0.8], [0.9, 0.1], [0.1, 0.9], 0.5, 0.5, 0.1), "rank-two"),  # captured at the threshold
    (([1.0, 0.8, 0.7], [0.6, 0.6, 0.1], [0.6, 0.1, 0.1], 0.9, 0.9, 0.1), "rank-two"),
]


@pytest.mark.parametrize("args,regime", CASES)
def test_regime_labels_at_their_boundaries(args, regime):
    s, res, spk, cap_res, cap_spk, edge = args
    got = metrics.classify(s, res, spk, cap_res, cap_spk, edge, 0.5, 5.0)
    assert got[0] == regime
    assert got[:2] == _regime(s, res, spk, cap_res, cap_spk, edge, 0.5, 5.0)
    assert got[2] == sum(v > edge for v in s)


def test_regime_rules_on_random_inputs_match_the_written_rules():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        k = int(rng.integers(1, 5))
        s = sorted(rng.choice([0.2, 0.5, 1.0, 2.0, 2.5], k).tolist(), reverse=True)
        res, spk = rng.choice([0.0, 0.3, 0.5, 0.7, 1.0], (2, k)).tolist()
        cap_res, cap_spk = rng.choice([0.3, 0.5, 0.7], 2).tolist()
        edge = float(rng.choice([0.2, 0.5, 1.0]))
        dom = float(rng.choice([1.0, 2.0, 5.0]))
        got = metrics.classify(s, res, spk, cap_res, cap_spk, edge, 0.5, dom)
        assert got[:2] == _regime(s, res, spk, cap_res, cap_spk, edge, 0.5, dom), (s, res, spk, cap_res, cap_spk, edge, dom)


def test_bulk_edge_and_outlier_count():
    assert metrics.bulk_edge(1.0, 10.0, 0.05, torch.float64) == pytest.approx(1.05)
    assert metrics.bulk_edge(1e-12, 10.0, 0.05, torch.float64) == pytest.approx(10.0 * 2**-26)
    assert metrics.bulk_edge(1e-12, 10.0, 0.05, torch.float32) == pytest.approx(10.0 * 2**-11.5)
    assert metrics.bulk_edge(1e-12, 10.0, 0.05, torch.float64, accuracy=1e-3) == pytest.approx(1e-2)
    assert metrics.count_outliers([3.0, 2.0, 1.05, 1.0], 1.05) == 2
    assert metrics.abs_cos(torch.eye(3, dtype=torch.float64)[:, :2] * 2, torch.tensor([3.0, -4.0, 0.0], dtype=torch.float64)) == [
        pytest.approx(0.6),
        pytest.approx(0.8),
    ]
    assert metrics.abs_cos(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)) == [0.0] * 3


# ---------------------------------------------------------------------------- trust end to end


def test_a_run_whose_spectrum_is_wrong_raises_the_trust_flag(monkeypatch):
    """A full analysis whose top-k triplets are off by 1 % (a broken solver, injected): the residual is
    measured from the triplets the metrics use, the spectrum check fails and the run is not trusted.
    Without the fault the same run is trusted."""
    cfg = _cfg("data.nu=0.4")
    good = analysis.analyze(cfg).metrics
    assert good["trust"]["ok"] and good["spectral_residual"] < 1e-8
    real = engine.spectra

    def broken(*args, **kwargs):
        spec_G, spec_E = real(*args, **kwargs)
        spec_G.s = spec_G.s * 1.01
        return spec_G, spec_E

    monkeypatch.setattr(engine, "spectra", broken)
    bad = analysis.analyze(cfg).metrics
    assert 5e-3 < bad["spectral_residual"] < 0.1  # ~0.01 s_k / max(s_k, ||E||)
    assert not bad["trust"]["checks"]["spectrum"] and not bad["trust"]["ok"]
    assert any("not converged" in w for w in bad["trust"]["warnings"])
    assert all(bad["trust"]["checks"][k] for k in ("finite", "identity", "quadrature"))


def test_a_run_below_the_resolution_floor_raises_the_resolution_flag():
    """A nearly linear net (leaky slope 0.9999: Sigma'_perp ~ 1e-4) has ||E|| ~ 1e-4 s_1: below float32's
    floor s_1 sqrt(eps) the run says the outliers cannot be counted (and the edge is the floor); in
    float64 the same run is resolved and its edge is (1 + margin) ||E||."""
    sets = ("model.activation=leaky_relu", "model.leaky_slope=0.9999", "analysis.mu=empirical")
    for dtype, resolved in (("float32", False), ("float64", True)):
        m = analysis.analyze(_cfg(*sets, f"compute.dtype={dtype}")).metrics
        floor = m["singular_values"][0] * float(np.finfo(dtype).eps) ** 0.5
        assert bool(1.05 * m["norms"]["E"] >= floor) is resolved
        assert m["trust"]["checks"]["resolution"] is resolved and m["trust"]["ok"] is resolved
        assert any("resolution" in w for w in m["trust"]["warnings"]) is not resolved
        assert m["bulk_edge"] == pytest.approx(max(1.05 * m["norms"]["E"], floor), rel=1e-5)


# ---------------------------------------------------------------------------- input noise, population mu


def test_input_noise_population_mu_is_the_monte_carlo_mean_over_noisy_inputs():
    """tanh (mu depends on the pre-activation scale) with input noise tau: the population mu is
    E sigma'(w^T (x_B + tau N + zeta z q)), here a Monte Carlo mean over fresh inputs; the bulk
    covariance grows by tau^2 I (not tau)."""
    tau = 0.7
    cfg = _cfg("model.activation=tanh", "analysis.mu=population", f"regularizer.input_noise={tau}", "data.nu=0.2")
    res = analysis.analyze(cfg)
    cfg, ds, net = analysis.prepare(cfg)
    W, q, lam = net.W.numpy(), ds.q.numpy(), ds.eigenvalues.numpy()
    rng = np.random.default_rng(1)
    N = 40000
    x = (
        rng.standard_normal((N, ds.d)) * np.sqrt(lam)
        + tau * rng.standard_normal((N, ds.d))
        + ds.zeta * np.outer(rng.standard_normal(N), q)
    )
    mc = (1 - np.tanh(x @ W.T) ** 2).mean(0)
    se = (1 - np.tanh(x @ W.T) ** 2).std(0) / math.sqrt(N)
    assert np.all(np.abs(res.arrays["mu"] - mc) < 5 * se + 1e-4)
    clean = analysis.analyze(cfg.replace(**{"regularizer.input_noise": 0.0})).arrays["mu"]
    assert np.abs(clean - mc).max() > 20 * se.max()  # the noise changes mu measurably


# ---------------------------------------------------------------------------- dtype


def test_float32_runs_in_float32(monkeypatch):
    """Every working tensor of a float32 analysis is float32 (spied on), and its values differ from the
    float64 run's by float32 rounding: more than float64's, within float32's bounds."""
    seen = {}
    real_gradient, real_spectra, real_compute = analysis.gradient, engine.spectra, engine.measures.compute

    def spy_gradient(net, X, y, kind):
        g = real_gradient(net, X, y, kind)
        seen["gradient"] = {net.W.dtype, X.dtype, y.dtype, g.D.dtype, g.Sp.dtype, g.r.dtype}
        return g

    def spy_spectra(f, r, spike, dec, *args):
        out = real_spectra(f, r, spike, dec, *args)
        seen["spectra"] = {spike.H_B.dtype, dec.D_perp.dtype, dec.mu.dtype, out[0].U.dtype, out[0].V.dtype, out[1].values.dtype}
        return out

    def spy_compute(spec_G, spec_E, dec, *args):
        seen["metrics"] = {spec_G.s.dtype, dec.S1.left.dtype, dec.S2.right.dtype}
        return real_compute(spec_G, spec_E, dec, *args)

    monkeypatch.setattr(analysis, "gradient", spy_gradient)
    monkeypatch.setattr(engine, "spectra", spy_spectra)
    monkeypatch.setattr(engine.measures, "compute", spy_compute)
    for dtype, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
        seen.clear()
        res = analysis.analyze(_cfg("data.nu=0.3", f"compute.dtype={dtype}", "model.activation=tanh"))
        assert seen and all(v == {torch_dtype} for v in seen.values()), (dtype, seen)
        if dtype == "float32":
            s32 = np.array(res.metrics["singular_values"])
        else:
            s64 = np.array(res.metrics["singular_values"])
    rel = np.abs(s32 - s64).max() / s64[0]
    assert 1e-9 < rel < 1e-4


def test_float32_training_keeps_float32():
    from gradrank.studies import train as training

    tr = training.train(_cfg("compute.dtype=float32", "train.steps=2", "train.record_every=1", "output.report=false"))
    assert tr.W.dtype == torch.float32 and tr.a.dtype == torch.float32


@pytest.mark.parametrize("activation", ["softplus", "gelu"])
def test_population_mu_is_one_half_when_sigma_prime_is_one_half_plus_odd(activation):
    """softplus' = sigmoid and gelu' = Phi(u) + u phi(u) are 1/2 plus an odd function, so E sigma'(s g) = 1/2
    exactly at every scale s; a strong spike (s_j up to ~100) sends the quadrature to its composite rule,
    which must not assume sigma' is even."""
    cfg = _cfg(f"model.activation={activation}", "analysis.mu=population", "data.nu=1.5", "model.planted=1.0")
    _, ds, net = analysis.prepare(cfg)
    from gradrank.models.mu import mu_population

    s = (ds.bulk_quadratic(net.W) + (ds.zeta * (net.W @ ds.q)) ** 2).sqrt()
    assert float(s.max()) > 20  # beyond what the Hermite rules resolve for these sigma'
    mu, err = mu_population(ds, net, 64)
    assert torch.allclose(mu, torch.full_like(mu, 0.5), rtol=0, atol=1e-8) and err <= 1e-6


def test_trust_thresholds_at_their_boundaries():
    """The documented tolerances, each just inside and just outside: mu's quadrature change 1e-6, the
    spectral residual 1e-3 (float64) / 1e-2 (float32), the identity analysis.identity_tol (at least 1e-4
    in float32)."""
    from gradrank.core.trust import trust as trust_fn

    res = analysis.analyze(_cfg("data.nu=0.3"))
    cfg, m = res.config, res.metrics.to_dict()
    from gradrank.core.records import Norms

    def trust(c, mm, err=0.0):
        return trust_fn(
            c.analysis,
            c.compute.dtype,
            Norms.from_dict(mm["norms"]),
            mm["singular_values"],
            mm["identity_error"],
            mm["spectral_residual"],
            err,
        ).checks.to_dict()

    assert trust(cfg, m, 1e-6)["quadrature"] and not trust(cfg, m, 1.01e-6)["quadrature"]
    assert (
        trust(cfg, {**m, "spectral_residual": 1e-3})["spectrum"]
        and not trust(cfg, {**m, "spectral_residual": 1.01e-3})["spectrum"]
    )
    c32 = cfg.replace(**{"compute.dtype": "float32"})
    assert (
        trust(c32, {**m, "spectral_residual": 1e-2})["spectrum"]
        and not trust(c32, {**m, "spectral_residual": 1.01e-2})["spectrum"]
    )
    assert trust(cfg, {**m, "identity_error": 1e-8})["identity"] and not trust(cfg, {**m, "identity_error": 1.01e-8})["identity"]
    assert trust(c32, {**m, "identity_error": 1e-4})["identity"] and not trust(c32, {**m, "identity_error": 1.01e-4})["identity"]


def test_dense_penalty_term_against_numpy():
    """With weight decay and a Jacobian penalty, the term "reg": its operator and Frobenius norms, share
    of ||G||_F^2 and the fractions of its Frobenius norm along X_B^T r and q (||u^T reg|| / (|u| ||reg||_F))."""
    s = _numpy_state(
        _cfg("analysis.mu=empirical", "regularizer.weight_decay=0.02", "regularizer.jacobian=0.05", "model.activation=tanh")
    )
    res = analysis.analyze(s["cfg"])
    from gradrank.models import regularizers

    reg = regularizers.penalty_gradient(s["cfg"].regularizer, s["net"], s["ds"].X, s["ds"].y, "mse").numpy()
    assert np.allclose(reg - 0.05 * regularizers.jacobian_gradient(s["net"], s["ds"].X).numpy(), 0.02 * s["W"].T, atol=1e-15)
    G = s["G"] + reg
    rm = res.metrics["reg"]
    res_dir = s["X_B"].T @ s["r"]
    assert rm["norm"] == pytest.approx(np.linalg.norm(reg, 2), rel=1e-10) == res.metrics["norms"]["reg"]
    assert rm["fro"] == pytest.approx(np.linalg.norm(reg), rel=1e-12)
    assert (
        rm["share"] == pytest.approx(np.linalg.norm(reg) ** 2 / np.linalg.norm(G) ** 2, rel=1e-9) == res.metrics["shares"]["reg"]
    )
    assert rm["residue"] == pytest.approx(
        np.linalg.norm(res_dir @ reg) / (np.linalg.norm(res_dir) * np.linalg.norm(reg)), rel=1e-9
    )
    assert rm["spike"] == pytest.approx(np.linalg.norm(s["q"] @ reg) / np.linalg.norm(reg), rel=1e-9)
    assert res.metrics["norms"]["G"] == pytest.approx(np.linalg.norm(G, 2), rel=1e-10)


def test_loglog_fit_against_scipy_linregress():
    """Slope, intercept, standard error, R^2 and the t-based interval against scipy.stats.linregress."""
    from scipy import stats

    from gradrank.core.fits import fit_loglog

    rng = np.random.default_rng(4)
    n = np.repeat([100, 200, 400, 800, 1600], 2).astype(float)
    v = 3.0 * n**-0.4 * np.exp(0.1 * rng.standard_normal(n.size))
    v[0] = -1.0  # non-positive values are left out
    fit = fit_loglog(n, v, level=0.9)
    ref = stats.linregress(np.log(n[1:]), np.log(v[1:]))
    t = stats.t.ppf(0.95, n.size - 1 - 2)
    assert (fit.slope, fit.intercept, fit.se, fit.r2) == pytest.approx(
        (ref.slope, ref.intercept, ref.stderr, ref.rvalue**2), rel=1e-10
    )
    assert (fit.ci_low, fit.ci_high) == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr), rel=1e-10)
    assert fit.points == 9 and fit.level == 0.9
    assert fit_loglog([100, 100, 100], [1.0, 2.0, 3.0]) is None and fit_loglog([1, 2], [1.0, 2.0]) is None


def test_rank_one_norm_is_the_dense_operator_norm_for_any_sign():
    from gradrank.core.split import RankOne

    rng = np.random.default_rng(5)
    left, right = torch.from_numpy(rng.standard_normal(7)), torch.from_numpy(rng.standard_normal(5))
    for scale in (-0.3, 0.0, 2.0):
        t = RankOne(scale, left, right)
        assert t.norm() == pytest.approx(np.linalg.norm(t.dense().numpy(), 2), rel=1e-12, abs=1e-300)
        assert np.allclose(t.dense().numpy(), scale * np.outer(left.numpy(), right.numpy()))
