"""The engine (gradrank/core/engine.py) on random factors against dense references: G formed densely,
torch.linalg.svdvals, and the four terms of arXiv 2510.01303 (Prop. 2.1 and its split) formed densely."""

from __future__ import annotations

import pytest
import torch

from gradrank import config
from gradrank.core import engine, spike
from gradrank.core.factors import Factors


def _factors(n, d, m, seed, residue=True, given_G=False):
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    r, J = torch.randn(n, generator=g, dtype=torch.float64), torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.randn(m, generator=g, dtype=torch.float64)
    D = r[:, None] * J * a
    if not residue:
        D = D + 0.1 * torch.randn(n, m, generator=g, dtype=torch.float64)  # samples interact: no residue form
    f = Factors(H, D, r, J, a, n, 0.7)
    return Factors(H, D, r, J, a, n, 0.7, H.T @ D * (0.7 / n)) if given_G else f


def _dense_terms(f: Factors, sp, residue: bool):
    """S1, S12, S2, E formed densely (the split of arXiv 2510.01303, section 3) with mu = J's mean row."""
    r, J, a = (f.r, f.J, f.a) if residue else (torch.ones(f.n, dtype=torch.float64), f.D, torch.ones(f.D.shape[1]).double())
    mu = J.mean(0)
    D_perp = r[:, None] * (J - mu) * a
    c = f.coef
    return {
        "S1": c * torch.outer(sp.H_B.T @ r, a * mu),
        "S12": c * sp.zeta * float(sp.z @ r) * torch.outer(sp.q, a * mu),
        "S2": c * sp.zeta * torch.outer(sp.q, D_perp.T @ sp.z),
        "E": c * sp.H_B.T @ D_perp,
    }


@pytest.mark.parametrize(
    "n, d, m, residue, given_G",
    [(12, 30, 25, True, False), (12, 30, 25, False, False), (80, 20, 15, True, True), (80, 20, 15, False, False)],
)
def test_engine_terms_norms_and_spectra_equal_dense_references(n, d, m, residue, given_G):
    """Factored route (n < min(d, m)) and dense route (with a given G, or from the factors); residue and
    general form: the four terms add up to G, and every norm, share and singular value is the dense one."""
    f = _factors(n, d, m, 1, residue, given_G)
    sp = spike.principal(f.H)
    acfg = config.load(sets=["analysis.identity=dense"]).analysis
    out = engine.run(f, sp, acfg)
    assert out.form == ("residue" if residue else "general")
    assert out.route == ("factored" if n < min(d, m) else "dense")
    G = f.coef * f.H.T @ f.D
    terms = _dense_terms(f, sp, residue)
    assert torch.allclose(sum(terms.values()), G, rtol=0, atol=1e-13 * float(G.norm()))
    mine = {"S1": out.dec.S1.dense(), "S12": out.dec.S12.dense(), "S2": out.dec.S2.dense(), "E": out.dec.E_dense(sp.H_B)}
    for k, T in terms.items():
        assert torch.allclose(mine[k], T, rtol=0, atol=1e-13 * float(G.norm())), k
        assert out.measures.norms[k] == pytest.approx(float(torch.linalg.svdvals(T)[0]), rel=1e-9, abs=1e-14), k
        assert out.measures.shares[k] == pytest.approx(float(T.pow(2).sum() / G.pow(2).sum()), rel=1e-9, abs=1e-14), k
    s = torch.linalg.svdvals(G)
    top = out.measures.singular_values
    assert top == pytest.approx(s[: len(top)].tolist(), rel=1e-9, abs=1e-12 * float(s[0]))
    assert out.measures.norms.G_fro == pytest.approx(float(G.norm()), rel=1e-12)
    assert out.spec_E.values[0] == pytest.approx(float(torch.linalg.svdvals(terms["E"])[0]), rel=1e-8)
    assert out.measures.identity_error < 1e-13 and out.measures.spectral_residual < 1e-8


def test_engine_adds_a_dense_penalty_to_G_and_to_the_bulk():
    """reg (a dense d_in x d_out penalty) joins G and the bulk: G's values are those of G_loss + reg,
    the bulk norm that of E + reg (dense SVDs)."""
    f = _factors(12, 30, 25, 2)
    sp = spike.principal(f.H)
    reg = 0.01 * torch.randn(30, 25, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = engine.run(f, sp, config.load().analysis, reg=reg)
    G = f.coef * f.H.T @ f.D + reg
    s = torch.linalg.svdvals(G)
    assert out.measures.singular_values == pytest.approx(s[: len(out.measures.singular_values)].tolist(), rel=1e-9)
    E = _dense_terms(f, sp, True)["E"]
    assert out.measures.norms.bulk == pytest.approx(float(torch.linalg.svdvals(E + reg)[0]), rel=1e-10)
    assert out.measures.reg.fro == pytest.approx(float(reg.norm()), rel=1e-12)
