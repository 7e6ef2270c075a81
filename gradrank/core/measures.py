"""What is measured (docs/model.md, measures): norms, spectra, alignments, energies, ranks and a regime.

Regime rules (analysis.* thresholds): an outlier is a singular value of G above the bulk edge
(1 + edge_margin) * ||B|| and above the numerical floor s_1 sqrt(eps) (by Weyl's inequality at most two can be, since S1 + S12 + S2 has
rank two). The bulk B is what G holds besides the rank-two S1 + S12 + S2: B = E for the loss
gradient, B = E + lambda grad R when a dense penalty is added to G (weight decay, Jacobian, noise
surrogate), so that G = S1 + S12 + S2 + B and Weyl's inequality s_3(G) <= ||B|| still bounds the
outliers by two. An outlier is *residue*-aligned when |cos(u_k, X_B^T r)| >= align_threshold and
exceeds |cos(u_k, q)|, *spike*-aligned in the symmetric case, else *mixed*. Then
  no-structure       no outlier;
  residue-dominated  one outlier, or s_1 > dominance * s_2, and u_1 is residue-aligned;
  spike-dominated    the same with u_1 spike-aligned;
  rank-two           two or more comparable outliers whose span captures both X_B^T r and q
                     (projection norm >= align_threshold each). The span, not each vector, is
                     tested: S1 + S12 = (gamma/n) X^T r (a o mu)^T already mixes q into the
                     residue spike, so individual singular vectors rotate within the plane;
  mixed              anything else (e.g. a merged spike aligned with neither direction).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from gradrank.core import records as R
from gradrank.core.floors import NORM_FLOOR, resolution
from gradrank.core.spectra import Spectrum
from gradrank.core.split import Decomposition


@dataclass
class Measures(R.Record):
    """What is measured of one gradient: the fields an analysis' Metrics and a layer's result share."""

    norms: R.Norms
    shares: R.Shares
    singular_values: list[float]
    alignment: R.Alignment
    captured: R.Directions
    directions: R.Directions
    energy: R.Energy
    rank: R.Ranks
    bulk_edge: float
    regime: str
    outlier_labels: list[str]
    mu_mean: float
    identity_error: float
    spectral_residual: float
    reg: R.RegTerm | None = R.omit()

    def fields(self) -> dict:
        """The fields by name, records kept as records (to fill a result record that holds them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def abs_cos(U: torch.Tensor, v: torch.Tensor) -> list[float]:
    """|cos| between each column of U and the vector v (0 when v = 0); for a matrix v (a residue
    spike of rank C), with the subspace its columns span: ||P_v u|| / ||u||."""
    nv = float(v.norm())
    if nv == 0.0:
        return [0.0] * U.shape[1]
    if v.ndim == 2:
        Q, Rv = torch.linalg.qr(v)
        Q = Q[:, Rv.diagonal().abs() > resolution(v.dtype) * float(Rv.diagonal().abs().max())]
        return [float(x) for x in (Q.T @ U).norm(dim=0) / U.norm(dim=0).clamp_min(NORM_FLOOR)]
    return [float(x) for x in (v @ U).abs() / (U.norm(dim=0).clamp_min(NORM_FLOOR) * nv)]


def max_principal_angle(B1: torch.Tensor, B0: torch.Tensor) -> float:
    """Largest principal angle (degrees) between the spans of two orthonormal bases of equal width."""
    c = torch.linalg.svdvals(B0.T @ B1).clamp(max=1.0)
    return math.degrees(float(torch.arccos(c.min()))) if c.numel() else 0.0


def bulk_edge(norm_E: float, norm_G: float, margin: float, dtype: torch.dtype, accuracy: float = 0.0) -> float:
    """The one outlier threshold: (1 + margin) ||E||, never below what the singular values resolve:
    ||G|| sqrt(eps) for the exact spectrum (the Gram route's error), ||G|| * accuracy for values
    accepted at a relative residual `accuracy` (training's tracked top-k)."""
    return max((1 + margin) * norm_E, norm_G * max(resolution(dtype), accuracy))


def count_outliers(s, edge: float) -> int:
    """Singular values above the bulk edge."""
    return sum(1 for v in s if v > edge)


def stable_rank(fro2: float, s1: float) -> float:
    """||G||_F^2 / ||G||_2^2 (0 for G = 0)."""
    return fro2 / max(s1**2, NORM_FLOOR)


def rank_measures(values: torch.Tensor, fro2: float, outliers: int) -> R.Ranks:
    """Stable and effective (entropy) rank, the count of values holding 90% / 99% of ||G||_F^2."""
    s = values[values > 0].double()
    if s.numel() == 0:
        return R.Ranks(0.0, 0.0, 0, 0, outliers)
    p = s / s.sum()
    cum = torch.cumsum(s**2, 0) / (s**2).sum()
    return R.Ranks(
        stable=stable_rank(fro2, float(s[0])),
        effective=math.exp(float(-(p * torch.log(p)).sum())),
        energy90=int((cum < 0.9).sum()) + 1,
        energy99=int((cum < 0.99).sum()) + 1,
        outliers=outliers,
    )


def classify(
    s: list[float],
    res: list[float],
    spk: list[float],
    cap_res: float,
    cap_spk: float,
    edge: float,
    threshold: float,
    dominance: float,
) -> tuple[str, list[str], int]:
    """(regime, per-outlier labels, outlier count) from the rules in the module docstring."""
    outliers = count_outliers(s, edge)
    labels = []
    for i in range(min(outliers, len(s))):
        if res[i] >= threshold and res[i] >= spk[i]:
            labels.append("residue")
        elif spk[i] >= threshold and spk[i] > res[i]:
            labels.append("spike")
        else:
            labels.append("mixed")
    if outliers == 0:
        return "no-structure", labels, 0
    if outliers == 1 or s[0] > dominance * s[1]:
        return {"residue": "residue-dominated", "spike": "spike-dominated"}.get(labels[0], "mixed"), labels, outliers
    if cap_res >= threshold and cap_spk >= threshold:
        return "rank-two", labels, outliers
    return "mixed", labels, outliers


def captured(U: torch.Tensor, v: torch.Tensor) -> float:
    """Norm of the unit vector v/|v| projected onto span(U) (U orthonormal columns); for a matrix v,
    the share of its Frobenius norm in span(U)."""
    nv = float(v.norm())
    return float((U.T @ v).norm()) / nv if nv > 0 and U.shape[1] else 0.0


def reg_term(reg: torch.Tensor, residue_dir: torch.Tensor, q: torch.Tensor, G_fro2: float) -> R.RegTerm:
    """The regulariser's own term: its size, its share of ||G||_F^2, and the fraction of its Frobenius
    norm along the residue direction X_B^T r and along the spike q (||u^T reg|| / ||reg||_F)."""
    fro = float(reg.norm())

    def along(v: torch.Tensor) -> float:
        nv = float(v.norm())
        return float((v @ reg).norm()) / (nv * fro) if fro > 0 and nv > 0 else 0.0

    return R.RegTerm(
        norm=float(torch.linalg.matrix_norm(reg, 2)),
        fro=fro,
        share=fro**2 / max(G_fro2, NORM_FLOOR),
        residue=along(residue_dir),
        spike=along(q),
    )


def compute(
    spec_G: Spectrum,
    spec_E: Spectrum,
    dec: Decomposition,
    rmv,
    q: torch.Tensor,
    a: torch.Tensor,
    reg: R.RegTerm | None,
    identity_error: float,
    spectral_residual: float,
    acfg,
    bulk_norm: float | None = None,
) -> Measures:
    """The measures of one gradient (docs/model.md, measures); rmv: U -> G^T U (G never formed);
    identity_error, spectral_residual: the engine's checks (core/engine.py), carried along;
    bulk_norm: ||E + lambda grad R|| when a penalty is added to G (the bulk edge's base, else ||E||)."""
    norm_G, fro_G = float(spec_G.values[0]), math.sqrt(spec_G.fro2)
    norms = R.Norms(
        G=norm_G,
        G_fro=fro_G,
        S1=dec.S1.norm(),
        S12=dec.S12.norm(),
        S2=dec.S2.norm(),
        E=float(spec_E.values[0]),
        E_fro=math.sqrt(spec_E.fro2),
        reg=None if reg is None else reg.norm,
        bulk=bulk_norm,
    )
    residue_dir = dec.S1.left
    align = R.Alignment(
        residue=abs_cos(spec_G.U, residue_dir),
        spike=abs_cos(spec_G.U, q),
        right_mu=abs_cos(spec_G.V, a * dec.mu),
        right_spike=abs_cos(spec_G.V, dec.S2.right),
    )
    # energy of G in the predicted subspace span{X_B^T r, q} vs its own top-2 subspace, and how
    # strongly G as a whole (penalty included) points along each predicted direction
    # (C outputs: the residue direction is the d x C matrix X_B^T R, its span the predicted part, the
    # Frobenius norms its size; docs/deep.md, section 2)
    res_cols = residue_dir[:, None] if residue_dir.ndim == 1 else residue_dir
    P = torch.linalg.qr(torch.cat([res_cols, q[:, None]], 1))[0]
    GtP = rmv(torch.cat([P, res_cols, q[:, None]], 1))
    pred = float(GtP[:, : P.shape[1]].pow(2).sum())  # P has one column when d = 1
    G_res = GtP[:, -2] if residue_dir.ndim == 1 else GtP[:, P.shape[1] : -1]
    directions = R.Directions(float(G_res.norm()) / max(float(residue_dir.norm()), NORM_FLOOR), float(GtP[:, -1].norm()))
    fro2 = max(spec_G.fro2, NORM_FLOOR)
    top = spec_G.s.double()
    edge = bulk_edge(norms.E if norms.bulk is None else norms.bulk, norm_G, acfg.edge_margin, spec_G.s.dtype)
    s_list = [float(v) for v in top]
    n_out = count_outliers(s_list, edge)
    U_out = spec_G.U[:, :n_out]
    cap = R.Directions(captured(U_out, residue_dir), captured(U_out, q))
    regime, labels, outliers = classify(
        s_list, align.residue, align.spike, cap.residue, cap.spike, edge, acfg.align_threshold, acfg.dominance
    )
    return Measures(
        norms=norms,
        shares=R.Shares(  # ||term||_F^2 / ||G||_F^2: S1 has rank <= C with C outputs (docs/deep.md, section 2)
            *(f * f / fro2 for f in (dec.S1.fro(), dec.S12.fro(), dec.S2.fro())),
            E=spec_E.fro2 / fro2,  # inf, not OverflowError
            reg=None if reg is None else reg.share,
        ),
        singular_values=s_list,
        alignment=align,
        captured=cap,
        directions=directions,
        energy=R.Energy(predicted_subspace=pred / fro2, top2_subspace=float((top[:2] ** 2).sum()) / fro2),
        rank=rank_measures(spec_G.values, spec_G.fro2, outliers),
        bulk_edge=edge,
        regime=regime,
        outlier_labels=labels,
        mu_mean=float(dec.mu.mean()),
        identity_error=identity_error,
        spectral_residual=spectral_residual,
        reg=reg,
    )
