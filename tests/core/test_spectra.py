"""Fast spectral paths against dense references: values to 1e-8 * s_1 (normwise, float64),
top-k subspace angles < 1e-6; the block Krylov top_k; the blocked identity check; device plumbing."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from gradrank.cli.app import app
from gradrank.core import engine
from gradrank.core import spectra as spectral
from gradrank.models.closed_form import gradient
from gradrank.models.mu import decompose, mu_population
from gradrank.studies import analyze as analysis


def _factors(n, d, m, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(n, d, generator=g, dtype=torch.float64)
    R = torch.randn(n, m, generator=g, dtype=torch.float64) * torch.linspace(3, 0.1, m, dtype=torch.float64)
    R[:, : m // 2] += 4 * torch.randn(n, 1, generator=g, dtype=torch.float64)  # an outlier, as in G
    return L.to(dtype), R.to(dtype)


def _angle(A, B):
    """Largest principal angle between span(A) and span(B)."""
    qa, qb = torch.linalg.qr(A.double())[0], torch.linalg.qr(B.double())[0]
    return float(torch.sqrt(1 - torch.linalg.svdvals(qa.T @ qb).clamp(max=1).min() ** 2))


@pytest.mark.parametrize("n,d,m", [(60, 90, 120), (60, 120, 90), (150, 90, 120), (150, 120, 90)])
def test_spectrum_matches_dense_svd(n, d, m):
    """Factored route (n < min(d, m)) and both dense-Gram sides (d <= m, d > m) vs torch.linalg.svd."""
    L, R = _factors(n, d, m)
    A = 0.7 * L.T @ R
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    sp = spectral.spectrum(L, R, 0.7, 6)
    assert sp.values.shape == S.shape
    assert float((sp.values - S).abs().max()) <= 1e-8 * float(S[0])
    assert sp.fro2 == pytest.approx(float(A.pow(2).sum()), rel=1e-12)
    assert _angle(sp.U, U[:, :6]) < 1e-6 and _angle(sp.V, Vh[:6].T) < 1e-6
    assert torch.allclose(sp.U.norm(dim=0), torch.ones(6, dtype=A.dtype), atol=1e-10)
    # each triplet is one: A v = s u
    assert float((A @ sp.V - sp.U * sp.s).norm(dim=0).max()) <= 1e-10 * float(S[0])


def test_values_only_and_top_k_eigenpairs_agree_with_dense_eigh():
    """k = 0 gives the same values; the Gram's eigenvalues (k = 0 and k = 7) equal torch.linalg.eigvalsh's
    and the top-k vectors are eigenvectors, also for a strided (non-contiguous) input."""
    L, R = _factors(80, 100, 140)
    full, vals = spectral.spectrum(L, R, 1.0, 5), spectral.spectrum(L, R, 1.0, 0)
    assert vals.U.shape == (100, 0) and vals.V.shape == (140, 0)
    assert torch.allclose(full.values, vals.values, rtol=0, atol=1e-12 * float(full.values[0]))
    M = R[:, :100].T @ R[:, :100] + torch.diag(torch.arange(100.0, dtype=torch.float64))
    lam_k, P = spectral._eig_top(M.clone(), 7)
    lam_0, P_0 = spectral._eig_top(M.clone(), 0)
    ref = torch.linalg.eigvalsh(M).flip(0)
    assert P_0.shape == (100, 0)
    for lam in (lam_k, lam_0):
        assert float((lam - ref).abs().max()) <= 1e-12 * float(ref[0])
    assert float((M @ P - P * lam_k[:7]).norm(dim=0).max()) <= 1e-10 * float(ref[0])
    assert float((P.T @ P - torch.eye(7, dtype=P.dtype)).abs().max()) <= 1e-12
    strided = (M @ M)[::2, ::2]
    lam_s, P_s = spectral._eig_top(strided, 3)
    assert float((lam_s - torch.linalg.eigvalsh(strided.contiguous()).flip(0)).abs().max()) <= 1e-12 * float(lam_s[0])
    assert float((strided @ P_s - P_s * lam_s[:3]).norm()) <= 1e-10 * float(lam_s[0])


def test_eig_top_vectors_span_a_repeated_top_eigenvalue():
    """A top eigenvalue of multiplicity 3: the three top vectors span its eigenspace (any basis of it
    is right), and the fourth is the next eigenvector."""
    Q = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64))[0]
    lam = torch.cat([torch.full((3,), 5.0, dtype=torch.float64), torch.linspace(4, 0.1, 37, dtype=torch.float64)])
    C = (Q * lam) @ Q.T
    values, P = spectral._eig_top(C, 4)
    assert float((values - lam).abs().max()) <= 1e-13 * 5
    assert _angle(P[:, :3], Q[:, :3]) < 1e-6 and _angle(P[:, 3:], Q[:, 3:4]) < 1e-6  # 1e-8: the sine's floor


@pytest.mark.parametrize("shape", [(40, 70), (90, 30)])
@pytest.mark.parametrize("scale", [1e-200, 1.0, 1e200])
def test_data_spectrum_matches_svd_at_any_scale(shape, scale):
    """The Gram route for a data matrix (given data: X's top direction, X_B's covariance spectrum)
    gives torch.linalg.svd's values to 1e-8 s_1 and its top right vector, wide or tall, also where
    the plain Gram of X would under- or overflow."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(*shape, generator=g, dtype=torch.float64) * torch.logspace(0, -3, shape[1], dtype=torch.float64)
    X[:, 0] *= 6  # a clear top direction
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    sp = spectral.data_spectrum(X * scale, 1)
    assert sp.values.shape == S.shape
    assert float((sp.values / scale - S).abs().max()) <= 1e-8 * float(S[0])
    assert abs(float(sp.V[:, 0] @ Vh[0])) == pytest.approx(1.0, abs=1e-12)


def test_accurate_mode_resolves_tiny_singular_values():
    """With L^T orthonormal and R = P diag(s) V^T the singular values are s exactly. The Gram route
    meets its normwise bound (1e-8 s_1) but loses values below ~sqrt(eps) s_1; accurate=True (an
    SVD of the factor) has the backward-stable bound ~eps s_1."""
    n, d, m = 40, 70, 90
    g = torch.Generator().manual_seed(3)
    Q = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64))[0]
    P = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))[0]
    s = torch.logspace(0, -12, n, dtype=torch.float64)
    L, R = Q.T, P @ torch.diag(s) @ V.T
    gram, acc = spectral.spectrum(L, R, 2.0, 3), spectral.spectrum(L, R, 2.0, 3, accurate=True)
    assert float((gram.values[:n] - 2 * s).abs().max()) <= 1e-8 * 2
    assert float((acc.values[:n] - 2 * s).abs().max()) <= 1e-14 * 2
    assert float((gram.values[:n] - 2 * s).abs().max()) > 1e-12 * 2
    assert float(acc.values[n:].abs().max()) == 0.0


def test_float32_spectrum_within_its_normwise_bound():
    L, R = _factors(60, 90, 120)
    S = torch.linalg.svdvals(L.T @ R)
    sp = spectral.spectrum(L.float(), R.float(), 1.0, 4)
    assert sp.values.dtype == torch.float32
    assert float((sp.values.double() - S).abs().max()) <= 1e-3 * float(S[0])


def _cold(L, R, coef, k, tol, seed=0):
    mv, rmv = spectral.factored(L, R, coef)
    g = torch.Generator().manual_seed(seed)
    start = mv(torch.randn(R.shape[1], k + max(k, 8), generator=g, dtype=torch.float64).to(L))
    return spectral.top_k(mv, rmv, start, k, tol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_top_k_block_krylov_matches_dense_svd(dtype, tol):
    L, R = _factors(120, 200, 300, seed=1, dtype=dtype)
    A = (0.5 * L.T @ R).double()
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    tk = _cold(L, R, 0.5, 6, tol)
    assert tk.residual <= tol and not tk.fallback
    Ud, Vd, sd = tk.U[:, :6].double(), tk.V[:, :6].double(), tk.s[:6].double()
    assert float((sd - S[:6]).abs().max()) <= 10 * tol * float(S[0])
    # A^T u_i = s_i v_i exactly (Rayleigh-Ritz), A v_i - s_i u_i = the reported residual
    res = (A @ Vd - Ud * sd).norm(dim=0).max() / S[0]
    assert float(res) == pytest.approx(tk.residual, rel=1e-2 if dtype == torch.float64 else 0.5, abs=1e-6)
    gap = float(S[5] - S[6]) / float(S[0])
    assert _angle(Ud, U[:, :6]) <= 10 * tol / gap and _angle(Vd, Vh[:6].T) <= 10 * tol / gap


def test_top_k_warm_start_and_fallback():
    """Started from the previous block (as when tracking a slowly changing G) it needs one step;
    capped below what convergence needs it calls exact() and says so; a rank-deficient operator
    gives zero, not huge, columns."""
    L, R = _factors(120, 200, 300, seed=2)
    mv, rmv = spectral.factored(L, R, 1.0)
    cold = _cold(L, R, 1.0, 4, 1e-10)
    warm = spectral.top_k(mv, rmv, cold.U, 4, tol=1e-10)
    assert warm.iterations == 1 < cold.iterations
    assert torch.allclose(warm.s[:4], cold.s[:4], rtol=1e-10)
    exact = spectral.spectrum(L, R, 1.0, 12)
    rough = torch.randn(200, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    capped = spectral.top_k(mv, rmv, rough, 4, tol=1e-12, max_dim=12, exact=lambda: exact)
    assert capped.fallback and capped.residual > 1e-12 and torch.equal(capped.s, exact.s[:12])
    for scale in (1e160, 1e-160):  # the Gram is scaled where its entries would over- or underflow
        big = spectral.top_k(*spectral.factored(L, R, scale), cold.U, 4, tol=1e-10)
        assert big.residual <= 1e-10 and torch.allclose(big.s[:4] / scale, cold.s[:4], rtol=1e-10)
    low = spectral.top_k(*spectral.factored(L[:3], R[:3], 1.0), rough, 3, tol=1e-8)  # rank 3
    assert low.residual <= 1e-8 and torch.isfinite(low.V).all() and float(low.s[3:].max()) < 1e-6 * float(low.s[0])


@pytest.fixture()
def decomposed(small_cfg):
    cfg, ds, net = analysis.prepare(small_cfg("data.nu=0.4", "model.activation=tanh"))
    grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    mu, err = mu_population(ds, net, cfg.analysis.quadrature)
    return ds, grad, decompose(grad, ds, net, mu, err)


def test_identity_residual_is_the_dense_check(decomposed):
    """Blocked addmm form = ||G - (S1 + S12 + S2 + E)||/||G|| with every term formed densely, at any
    block size; a perturbed term is caught with the size it should have."""
    ds, grad, dec = decomposed
    G = grad.dense()
    dense = float((G - dec.E_dense(ds.X_B) - dec.S1.dense() - dec.S12.dense() - dec.S2.dense()).norm() / G.norm())
    assert dense < 1e-13
    for block in (1 << 25, 8 * G.shape[0] * 7):  # one block, and blocks of 7 columns
        assert engine.identity_residual(G, dec, ds.X_B, block) == pytest.approx(dense, abs=1e-15)
    dec.S2.scale *= 1 + 1e-6
    expected = 1e-6 * dec.S2.norm() / (1 + 1e-6) / float(G.norm())
    assert engine.identity_residual(G, dec, ds.X_B, 8 * G.shape[0] * 7) == pytest.approx(expected, rel=1e-3)


def test_identity_probe_estimates_the_dense_check(decomposed):
    """The 8-probe estimate is at rounding level when the terms add up, and within a factor 3 of the
    dense Frobenius ratio when one term is off (unbiased for the square; spread ~0.5)."""
    ds, grad, dec = decomposed
    G = grad.dense()
    assert engine.identity_probe(grad, dec, ds.X_B) < 1e-13
    for term, rel in ((dec.S2, 1e-6), (dec.S1, 1e-3)):
        term.scale *= 1 + rel
        dense = engine.identity_residual(G, dec, ds.X_B)
        assert dense > 1e-9 and 1 / 3 < engine.identity_probe(grad, dec, ds.X_B) / dense < 3


def test_identity_modes_change_only_the_check(small_cfg):
    """analysis.identity = probe (default) or dense: both at rounding level, everything else identical."""
    out = {}
    for mode in ("probe", "dense"):
        cfg, ds, net = analysis.prepare(small_cfg(f"analysis.identity={mode}", "model.activation=gelu"))
        out[mode] = analysis.analyze_state(cfg, ds, net).metrics
        assert 0 < out[mode]["identity_error"] < 1e-13
    assert out["probe"]["identity_error"] != out["dense"]["identity_error"]
    assert out["probe"]["norms"] == out["dense"]["norms"] and out["probe"]["singular_values"] == out["dense"]["singular_values"]


def _pair(p, n, d, m, j=2, seed=3, spike=1.0):
    L, R = _factors(p, d, m, seed)
    L[-1] *= spike
    g = torch.Generator().manual_seed(seed + 1)
    U, B = torch.randn(p, j, generator=g, dtype=torch.float64), torch.randn(m, j, generator=g, dtype=torch.float64)
    return L, R[:n], U, B


@pytest.mark.parametrize("p,n,d,m", [(61, 60, 90, 120), (61, 60, 120, 90), (70, 60, 90, 120), (95, 90, 90, 120)])
def test_spectrum_pair_matches_dense_svds(p, n, d, m):
    """A = c L^T [R; 0] and A' = c L^T ([R; 0] - U B^T) from one QR and a Gram update (and the
    shapes it does not fit) against dense SVDs of both."""
    L, R, U, B = _pair(p, n, d, m)
    Rp = torch.cat([R, R.new_zeros(p - n, m)])
    A, A2 = 0.7 * L.T @ Rp, 0.7 * L.T @ (Rp - U @ B.T)
    calls = []
    other = lambda: calls.append(1) or spectral.spectrum(L, Rp - U @ B.T, 0.7, 0)  # noqa: E731
    threads = torch.get_num_threads()
    sp, sp2 = spectral.spectrum_pair(L, R, U, B, 0.7, 5, other)
    U0, S, Vh = torch.linalg.svd(A, full_matrices=False)
    S2 = torch.linalg.svdvals(A2)
    assert len(calls) == (p >= min(d, m))  # the update serves whenever the Gram route fits
    assert torch.get_num_threads() == threads  # the two threads' limit left nothing behind
    assert sp.values.shape == S.shape and sp2.values.shape == S2.shape
    assert float((sp.values - S).abs().max()) <= 1e-8 * float(S[0])  # normwise: null values come out ~sqrt(eps) s_1
    assert float((sp2.values - S2).abs().max()) <= 1e-8 * float(S2[0])
    assert sp2.fro2 == pytest.approx(float(A2.pow(2).sum()), rel=1e-10)
    assert _angle(sp.U, U0[:, :5]) < 1e-6 and _angle(sp.V, Vh[:5].T) < 1e-6


def test_spectrum_pair_gives_the_same_values_on_one_thread():
    """A process held to one torch thread (a sweep worker, a layer of `gradrank layers`) gets the
    same values as with two, and its thread count is left as it was."""
    L, R, U, B = _pair(61, 60, 90, 120)
    other = lambda: spectral.spectrum(L, torch.cat([R, R.new_zeros(1, 120)]) - U @ B.T, 1.0, 0)  # noqa: E731
    both = spectral.spectrum_pair(L, R, U, B, 1.0, 3, other)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = spectral.spectrum_pair(L, R, U, B, 1.0, 3, other)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, both):  # the products and eigensolvers may round differently on one thread
        assert float((a.values - b.values).abs().max()) <= 1e-12 * float(b.values[0])


def test_spectrum_pair_falls_back_when_the_update_cancels():
    """A' much smaller than A (R = U B^T + 1e-6 noise): the rank-2j update would lose A' to rounding,
    so the exact route is taken and A''s values stay right."""
    p, n, d, m = 61, 60, 90, 120
    L, R, U, B = _pair(p, n, d, m)
    U[n:] = 0
    R = (U @ B.T)[:n] + 1e-6 * R
    A2 = L.T @ (torch.cat([R, R.new_zeros(p - n, m)]) - U @ B.T)
    calls = []
    other = lambda: calls.append(1) or spectral.spectrum(L[:n], 1e-6 * _pair(p, n, d, m)[1], 1.0, 0)  # noqa: E731
    sp, sp2 = spectral.spectrum_pair(L, R, U, B, 1.0, 3, other)
    assert calls == [1]
    S2 = torch.linalg.svdvals(A2)
    assert float(S2[0]) < 1e-4 * float(sp.values[0])
    assert float((sp2.values[:n] - S2[:n]).abs().max()) <= 1e-8 * float(S2[0])


def test_analysis_E_spectrum_is_E_s(small_cfg):
    """analyze_state's E values (from G's Gram by the update) = svdvals of E formed densely from X_B and
    D_perp, to the Gram routes' normwise ~sqrt(eps) ||E|| and the top value to 1e-13; a strong spike
    (nu = 1.2) takes the exact route with the same accuracy."""
    for nu in ("0.4", "1.2"):
        cfg, ds, net = analysis.prepare(small_cfg(f"data.nu={nu}"))
        res = analysis.analyze_state(cfg, ds, net)
        grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
        dec = decompose(grad, ds, net, torch.as_tensor(res.arrays["mu"]))
        S2 = torch.linalg.svdvals(dec.E_dense(ds.X_B))
        err = (torch.as_tensor(res.arrays["E_singular_values"]) - S2).abs()
        assert float(err.max()) <= 3e-8 * float(S2[0]) and float(err[0]) <= 1e-13 * float(S2[0])
        assert res.metrics["norms"]["E_fro"] == pytest.approx(float(S2.pow(2).sum()) ** 0.5, rel=1e-10)


def test_cuda_device_plumbing(tmp_path, small_cfg):
    """--device cuda: without CUDA a one-line input error (exit 2, nothing written); with it, the
    same numbers as on the CPU."""
    sets = ["--set", "data.n=40", "--set", "data.d=50", "--set", "model.width=60", "--no-report", "-q"]
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["analyze", *sets, "--device", "cuda", "-o", str(out)])
    if not torch.cuda.is_available():
        assert res.exit_code == 2
        assert "compute.device" in res.output and len(res.output.strip().splitlines()) == 1
        assert not out.exists()
        return
    assert res.exit_code == 0, res.output
    cpu = CliRunner().invoke(app, ["analyze", *sets, "-o", str(tmp_path / "cpu")])
    assert cpu.exit_code == 0
    import json

    a, b = (json.loads((p / "metrics.json").read_text()) for p in (out, tmp_path / "cpu"))
    assert a["singular_values"] == pytest.approx(b["singular_values"], rel=1e-8)


def test_analysis_spectrum_svd_option_agrees_with_gram(small_cfg):
    """analysis.spectrum = svd (the backward-stable route) gives the spectra of G and E that the
    Gram route gives, to the Gram's normwise bound."""
    gram = analysis.analyze(small_cfg("data.nu=0.4"))
    svd = analysis.analyze(small_cfg("data.nu=0.4", "analysis.spectrum=svd"))
    for key in ("singular_values", "E_singular_values"):
        a, b = gram.arrays[key], svd.arrays[key]
        assert abs(a - b).max() <= 1e-8 * a[0]
    assert _angle(torch.as_tensor(gram.arrays["U"]), torch.as_tensor(svd.arrays["U"])) < 1e-6
    assert svd.config.analysis.spectrum == "svd" and gram.config.hash() != svd.config.hash()


@pytest.mark.parametrize("d,m", [(90, 120), (120, 90)])
def test_dense_spectrum_pair_matches_dense_svds(d, m):
    """A dense A and A' = A - left right (rank 3) from one Gram of A's smaller side and its update,
    against dense SVDs of both: values normwise ~sqrt(eps) s_1(A), A''s Frobenius norm, A's top vectors."""
    L, R = _factors(70, d, m)
    A = L.T @ R
    g = torch.Generator().manual_seed(5)
    left, right = torch.randn(d, 3, generator=g, dtype=torch.float64), torch.randn(3, m, generator=g, dtype=torch.float64)
    sp, sp2 = spectral.dense_spectrum_pair(A, left, right, 5)
    A2 = A - left @ right
    U0, S, Vh = torch.linalg.svd(A, full_matrices=False)
    S2 = torch.linalg.svdvals(A2)
    assert sp.values.shape == S.shape and sp2.values.shape == S2.shape
    assert float((sp.values - S).abs().max()) <= 1e-8 * float(S[0])
    assert float((sp2.values - S2).abs().max()) <= 1e-8 * float(S[0])
    assert sp2.fro2 == pytest.approx(float(A2.pow(2).sum()), rel=1e-10)
    assert _angle(sp.U, U0[:, :5]) < 1e-6 and _angle(sp.V, Vh[:5].T) < 1e-6
    dense = spectral.dense_spectrum(A, 5)
    assert torch.equal(dense.values, sp.values) and torch.equal(dense.U, sp.U)  # the same G side as dense_spectrum


def test_dense_spectrum_pair_falls_back_when_the_update_cancels():
    """A' = A - (a rank-3 part) 100 times smaller than A and of rank 20: the update would leave A''s
    null values ~sqrt(eps) s_1(A) = 1e-6 s_1(A') off, so A' is recomputed densely and stays right to its own s_1."""
    g = torch.Generator().manual_seed(6)
    left, right = torch.randn(90, 3, generator=g, dtype=torch.float64), torch.randn(3, 120, generator=g, dtype=torch.float64)
    noise = torch.randn(90, 20, generator=g, dtype=torch.float64) @ torch.randn(20, 120, generator=g, dtype=torch.float64)
    noise *= 0.01 * float(torch.linalg.matrix_norm(left @ right, 2)) / float(torch.linalg.matrix_norm(noise, 2))
    A = left @ right + noise
    _, sp2 = spectral.dense_spectrum_pair(A, left, right, 3)
    S2 = torch.linalg.svdvals(A - left @ right)
    assert float(S2[0]) < 0.02 * float(torch.linalg.matrix_norm(A, 2))
    assert float((sp2.values - S2).abs().max()) <= 3e-8 * float(S2[0])  # the Gram route's own sqrt(eps) s_1
