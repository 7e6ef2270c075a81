"""The one engine: factors, a spike and mu -> the four terms, their check, the spectra and the measures.

Every analysis runs through `run`: the paper's two-layer network (its closed-form factors, Prop. 2.1
of arXiv 2510.01303) and every captured layer of any model alike. Steps, once each:
  split      G = S1 + S12 + S2 + E (core/split.py) from H = H_B + zeta z q^T (core/spike.py) and
             D = diag(r) J diag(a) with J's rows centred at mu (core/factors.py);
  identity   ||G - (S1 + S12 + S2 + E)|| / ||G||, every term from its own factors;
  spectra    G's values and top-k triplets and E's values (core/spectra.py);
  measures   norms, shares, alignments, ranks, the regime (core/measures.py).
A dense penalty `reg` (d_in x d_out) may be added to G: the bulk is then E + reg (core/measures.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradrank.core import measures
from gradrank.core.factors import Factors
from gradrank.core.floors import NORM_FLOOR, resolution, tiny
from gradrank.core.spectra import Spectrum, dense_spectrum_pair, factored_route, spectrum, spectrum_pair
from gradrank.core.spike import Spike
from gradrank.core.split import Decomposition, split


@dataclass
class Outcome:
    """The engine's result: the measures, and the tensors the arrays and terms are made of."""

    measures: measures.Measures
    spec_G: Spectrum
    spec_E: Spectrum
    dec: Decomposition
    form: str  # "residue" (D = diag(r) J diag(a)) or "general" (r = 1, J = D)
    factorization_error: float | None
    route: str  # "factored" (n < min(d_in, d_out)) or "dense"


def run(
    f: Factors,
    spike: Spike,
    acfg,
    mu: torch.Tensor | None = None,
    mu_error: float = 0.0,
    reg: torch.Tensor | None = None,
) -> Outcome:
    """The four terms and the measures of G = coef H^T D (+ reg) for the split H = H_B + zeta z q^T.

    mu: the centre of J's rows (d_out; C outputs: d_out x C); None: their empirical mean.
    acfg: the analysis settings (top_k, identity, spectrum, edge_margin, align_threshold, dominance)."""
    r, J, form, err = f.residue_form()
    m = f.D.shape[1]
    a = f.a if form == "residue" and f.a is not None else torch.ones(m, dtype=f.D.dtype, device=f.D.device)
    if mu is None:
        mu = J.mean(0) if J.ndim == 2 else J.mean(1).T  # C outputs: d_out x C, one per output
    dec = split(f.coef, spike.H_B, spike.zeta, spike.z, spike.q, r, a, J, mu, mu_error)
    identity = (identity_residual if acfg.identity == "dense" else identity_probe)(f, dec, spike.H_B)
    accurate = acfg.spectrum == "svd"
    route = "factored" if factored_route(f.n, f.H.shape[1], m) else "dense"
    if reg is None and f.G is not None and route == "dense":  # one Gram of the given G; E's values as its update
        spec_G, spec_E = dense_spectrum_pair(f.G, *dec.spikes(), acfg.top_k, accurate)
    else:
        spec_G, spec_E = spectra(f, r, spike, dec, acfg.top_k, reg, accurate)
    mv, rmv = f.mv, f.rmv
    if reg is not None:  # G = G_loss + reg, never formed unless reg is
        mv, rmv = (lambda V: f.mv(V) + reg @ V), (lambda U: f.rmv(U) + reg.T @ U)
    reg_term = None if reg is None else measures.reg_term(reg, dec.S1.left, spike.q, spec_G.fro2)
    # with a penalty the bulk is E + reg (core/measures.py): its norm sets the bulk edge
    bulk = (
        None if reg is None else float(spectrum(spike.H_B, dec.D_perp, dec.coef, 0, dense_add=reg, accurate=accurate).values[0])
    )
    residual = spectral_residual(mv, rmv, spec_G, float(spec_E.values[0]))  # scale ||E||
    a_align = a if f.a is not None else torch.ones_like(dec.mu)
    measured = measures.compute(spec_G, spec_E, dec, rmv, spike.q, a_align, reg_term, identity, residual, acfg, bulk)
    return Outcome(measured, spec_G, spec_E, dec, form, err, route)


def spectra(
    f: Factors, r: torch.Tensor, spike: Spike, dec: Decomposition, k: int, reg: torch.Tensor | None, accurate: bool
) -> tuple[Spectrum, Spectrum]:
    """G's spectrum (values, top-k triplets) and E's values from the factors.

    Without a dense penalty, E is a rank-2 change of G's right factor (H_B = H - zeta z q^T,
    D_perp = D - r (a o mu)^T): E = coef [H; q^T]^T ([D; 0] - U B^T), U = [[r, 0], [0, zeta]],
    B = [a o mu, D_perp^T z], so both come from one QR and one Gram (core/spectra.py, spectrum_pair);
    E = coef H_B^T D_perp has rank <= n."""
    exact_E = lambda: spectrum(spike.H_B, dec.D_perp, dec.coef, 0, accurate=accurate)  # noqa: E731
    if reg is not None:
        return spectrum(f.H, f.D, f.coef, k, dense_add=reg, accurate=accurate), exact_E()
    n = f.n
    if r.ndim == 1:
        U = f.D.new_zeros(n + 1, 2)
        U[:n, 0], U[n, 1] = r, spike.zeta
        B = torch.stack([dec.S1.right, dec.S2.right], 1)  # a o mu, D_perp^T z
    else:  # C outputs: U = [[R, 0], [0, zeta]], B = [a o mu_1..C, D_perp^T z]
        C = r.shape[1]
        U = f.D.new_zeros(n + 1, C + 1)
        U[:n, :C], U[n, C] = r, spike.zeta
        B = torch.cat([dec.S1.right, dec.S2.right[:, None]], 1)
    return spectrum_pair(torch.cat([f.H, spike.q[None]]), f.D, U, B, f.coef, k, exact_E, accurate, rank_other=n)


def identity_probe(f: Factors, dec: Decomposition, H_B: torch.Tensor, probes: int = 8) -> float:
    """||(G - S1 - S12 - S2 - E) Omega||_F / ||G Omega||_F for a fixed d_out x 8 Gaussian Omega,
    every term applied from its own factors (G from H and D or the given G, E from H_B and D_perp):
    no d_in x d_out matrix is formed. ||A Omega||_F^2 / 8 is an unbiased estimate of ||A||_F^2
    (relative spread 0.5), and any discrepancy between the terms shows with probability one."""
    g = torch.Generator().manual_seed(0)
    Omega = torch.randn(f.D.shape[1], probes, generator=g, dtype=torch.float64).to(f.D)
    G_Om = f.mv(Omega)
    left, right = dec.spikes()
    diff = G_Om - dec.coef * (H_B.T @ (dec.D_perp @ Omega)) - left @ (right @ Omega)
    return float(diff.norm()) / max(float(G_Om.norm()), NORM_FLOOR)


def identity_residual(f: Factors | torch.Tensor, dec: Decomposition, H_B: torch.Tensor, block_bytes: int = 1 << 25) -> float:
    """||G - (S1 + S12 + S2 + E)||_F / ||G||_F, every term dense: E = coef H_B^T D_perp by a GEMM
    and the rank-one terms by one rank-3 update, over column blocks of ~block_bytes (f: the
    factors, or G itself)."""
    G = f.gradient() if isinstance(f, Factors) else f
    left, right = dec.spikes()
    step = max(1, block_bytes // (G.element_size() * G.shape[0]))
    diff2 = 0.0
    for j in range(0, G.shape[1], step):
        cols = slice(j, j + step)
        diff = torch.addmm(G[:, cols], H_B.T, dec.D_perp[:, cols], alpha=-dec.coef)
        diff2 += float(diff.addmm_(left, right[:, cols], alpha=-1).pow(2).sum())
    return diff2**0.5 / max(float(G.norm()), NORM_FLOOR)


def spectral_residual(mv, rmv, spec: Spectrum, scale: float) -> float:
    """max_k max(||G v_k - s_k u_k||, ||G^T u_k - s_k v_k||) / max(s_k, scale) over the top-k
    triplets (mv, rmv: V -> G V, U -> G^T U): an independent check of the Gram-based spectrum, whose
    error grows like eps (s_1 / s_k)^2 (scale = ||E||, the bulk edge the outlier count is measured against)."""
    s = spec.s
    keep = s > s[0] * resolution(s.dtype) if s.numel() else s > 0  # numerically null triplets have no direction
    s, U, V = s[keep], spec.U[:, keep], spec.V[:, keep]
    if not s.numel():
        return 0.0
    U, V = U / U.norm(dim=0).clamp_min(NORM_FLOOR), V / V.norm(dim=0).clamp_min(NORM_FLOOR)
    res = torch.maximum((mv(V) - U * s).norm(dim=0), (rmv(U) - V * s).norm(dim=0))
    return float((res / s.clamp_min(max(scale, tiny(s.dtype)))).max())
