"""Layer numbers that sum over every singular value or every rank: a multi-output layer's shares are
Frobenius shares (docs/deep.md, section 3), and float32 layers' effective and energy ranks come from
values accurate enough for a sum over the whole spectrum."""

from __future__ import annotations

import pytest
import torch

import gradrank
from gradrank import config
from gradrank.models import capture as capture_mod
from gradrank.models.registry import Problem, linear_layers
from gradrank.studies import layers as layers_mod


def _classifier(dtype=torch.float64, n=30, seed=5):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(70, 60), torch.nn.Tanh(), torch.nn.Linear(60, 50), torch.nn.Tanh(), torch.nn.Linear(50, 3)
    ).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[-1] ** 0.5
    x, y = torch.randn(n, 70, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    return Problem("classifier", model.to(dtype), [(x.to(dtype), y)], torch.nn.functional.cross_entropy)


def test_a_three_class_heads_s1_share_is_its_frobenius_norm_squared_over_gs():
    """S1 of a C = 3 output layer has rank up to C - 1 = 2: its share is ||S1||_F^2 / ||G||_F^2 of the
    dense product (not ||S1||_op^2, which is smaller), S12's and S2's (rank one) likewise, E's too."""
    problem = _classifier()
    cap = capture_mod.capture(problem, linear_layers(problem.model))
    res = layers_mod.analyze_capture(cap, config.load(), problem)
    low = 0
    for r in res.layers:
        f = cap.layers[r.name]
        factors, spike, _ = layers_mod.decompose_layer(f, problem.spike)
        out = gradrank.core.engine.run(factors, spike, config.load().analysis)
        G = f.gradient()
        fro2 = float(G.norm()) ** 2
        S1 = out.dec.S1.dense()
        assert torch.linalg.matrix_rank(S1) >= 2, r.name  # the case that matters: more than one singular value
        dense = {
            "S1": float(S1.norm()) ** 2 / fro2,
            "S12": float(out.dec.S12.dense().norm()) ** 2 / fro2,
            "S2": float(out.dec.S2.dense().norm()) ** 2 / fro2,
            "E": float(out.dec.E_dense(spike.H_B).norm()) ** 2 / fro2,
        }
        for k, v in dense.items():
            assert r.shares[k] == pytest.approx(v, rel=1e-10, abs=1e-15), (r.name, k)
        op = float(torch.linalg.matrix_norm(S1, 2)) ** 2 / fro2
        low += op < 0.99 * dense["S1"]
        assert r.norms["S1"] == pytest.approx(op**0.5 * fro2**0.5, rel=1e-10)  # norms.S1 stays the operator norm
    assert low  # the operator norm's share would be wrong somewhere


def _float32_layer(n: int, d_in: int = 384, d_out: int = 1536):
    """A float32 Linear whose gradient is a chosen A (d_in x d_out): inputs X (n x d_in) with X^T X = n I
    (n >= d_in) or n orthonormal rows scaled by sqrt(n), the loss mean_i <o_i, T_i> with T = X A, so
    G = X^T T / n = A (n >= d_in) or its projection on X's rows. A has ten large values (more than
    analysis.top_k: the Gram resolves them) and a long tail from 1e-3 to 1e-6 of the top, as MiniLM's layers have."""
    g = torch.Generator().manual_seed(0)
    k = min(d_in, d_out)
    s = torch.cat([torch.linspace(1.0, 0.1, 10, dtype=torch.float64), torch.logspace(-3, -6, k - 10, dtype=torch.float64)])
    U = torch.linalg.qr(torch.randn(d_in, k, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(d_out, k, generator=g, dtype=torch.float64))[0]
    A = (U * s) @ V.T
    Q = torch.linalg.qr(torch.randn(max(n, d_in), max(n, d_in), generator=g, dtype=torch.float64))[0]
    x = Q[:n, :d_in] * n**0.5 if n >= d_in else Q[:d_in, :n].T * n**0.5  # X^T X = n I, or X X^T = n I
    torch.manual_seed(0)
    return Problem("float32", torch.nn.Linear(d_in, d_out), [(x.float(), (x @ A).float())], lambda o, t: (o * t).sum(1).mean())


def _whole_spectrum_measures(s: torch.Tensor) -> tuple[float, int, int]:
    """(effective rank, energy90, energy99) of float64 singular values, by their definitions."""
    s = s[s > 0]
    p = s / s.sum()
    cum = torch.cumsum(s**2, 0) / (s**2).sum()
    return float(torch.exp(-(p * p.log()).sum())), int((cum < 0.9).sum()) + 1, int((cum < 0.99).sum()) + 1


@pytest.mark.parametrize("n, route", [(600, "dense"), (120, "factored")])
def test_a_float32_layers_whole_spectrum_measures_equal_float64_svdvals_of_its_gradient(n, route):
    """Effective rank, energy ranks, ||G||_F and E's share sum over every singular value: a float32
    Gram's eigenvalues put every small value ~3.5e-4 s_1 off (effective rank +1.3 % here); from a
    float64 Gram they agree with float64 svdvals of the same float32 gradient (autograd's on the dense
    route, H^T D / n of the captured factors on the factored one)."""
    problem = _float32_layer(n)
    cap = capture_mod.capture(problem, linear_layers(problem.model))
    res = layers_mod.analyze_capture(cap, config.load(), problem)
    (r,) = res.layers
    f = cap.layers[""]
    assert r.spectrum_route == route and res.dtype == "float32"
    G = f.G.double() if route == "dense" else f.H.double().T @ f.D.double() / f.rows
    s = torch.linalg.svdvals(G)
    effective, energy90, energy99 = _whole_spectrum_measures(s)
    assert r.rank["effective"] == pytest.approx(effective, rel=1e-6)
    assert (r.rank["energy90"], r.rank["energy99"]) == (energy90, energy99)
    assert r.norms["G_fro"] == pytest.approx(float(s.norm()), rel=1e-6)
    _, spike, _ = layers_mod.decompose_layer(f, problem.spike)
    dec = gradrank.core.engine.run(f.factors(), spike, config.load().analysis).dec
    E = dec.coef * spike.H_B.double().T @ dec.D_perp.double()
    assert r.shares["E"] == pytest.approx(float(E.norm()) ** 2 / float(s.norm()) ** 2, rel=1e-4)
    values = torch.from_numpy(res.arrays["/G"])
    assert float((values - s).abs().max()) < 1e-7 * float(s[0])  # every value, not only the top ones
