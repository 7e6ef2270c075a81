"""The exact four-term split of a factored gradient G = coef * X^T D (docs/model.md, section 3;
the paper's Prop. 2.1 and its decomposition).

The left factor splits as X = X_B + zeta z q^T (bulk plus rank-one data spike); the right factor
as D = diag(r) J with J = s * Sigma' (s a per-column scale: the outer weights a for the paper's
network, ones for any other layer) and Sigma' = 1 mu^T + Sigma'_perp. With a o mu the mean
part of J's columns:
    S1  = (gamma/n) (X_B^T r)(a o mu)^T                     residue spike
    S12 = (gamma zeta/n)(z^T r) q (a o mu)^T                interpolant
    S2  = (gamma zeta/n) q (a o (Sigma'_perp^T (z o r)))^T  data spike
    E   = (gamma/n) X_B^T [(r a^T) o Sigma'_perp]           error
The rank-one terms stay as factor vectors; E stays factored as coef * X_B^T D_perp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RankOne:
    """scale * left right^T, never formed unless asked. With C outputs per sample the residue spike
    has rank <= C: left (d x C) and right (m x C) are then matrices (docs/deep.md, section 2)."""

    scale: float
    left: torch.Tensor
    right: torch.Tensor

    def norm(self) -> float:
        """Operator norm (= the Frobenius norm of a rank-one matrix; for matrix factors, from their R factors)."""
        if self.left.ndim == 1:
            return abs(self.scale) * float(self.left.norm()) * float(self.right.norm())
        R_l, R_r = torch.linalg.qr(self.left, mode="r")[1], torch.linalg.qr(self.right, mode="r")[1]
        return abs(self.scale) * float(torch.linalg.svdvals(R_l @ R_r.T)[0])

    def fro(self) -> float:
        """Frobenius norm: the operator norm for a rank-one term (the same number); for matrix factors
        (rank <= C) ||R_l R_r^T||_F from their R factors, every singular value counted."""
        if self.left.ndim == 1:
            return self.norm()
        R_l, R_r = torch.linalg.qr(self.left, mode="r")[1], torch.linalg.qr(self.right, mode="r")[1]
        return abs(self.scale) * float(torch.linalg.matrix_norm(R_l @ R_r.T))

    def dense(self) -> torch.Tensor:
        if self.left.ndim == 1:
            return self.scale * torch.outer(self.left, self.right)
        return self.scale * (self.left @ self.right.T)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(d x k, k x m) with this term = their product (k = 1, or C)."""
        if self.left.ndim == 1:
            return (self.scale * self.left)[:, None], self.right[None, :]
        return self.scale * self.left, self.right.T


@dataclass
class Decomposition:
    S1: RankOne
    S12: RankOne
    S2: RankOne
    D_perp: torch.Tensor  # (r a^T) o Sigma'_perp, so E = coef * X_B^T D_perp
    mu: torch.Tensor
    mu_error: float  # quadrature convergence estimate (0 for the empirical mean)
    coef: float

    def spikes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """S1 + S12 + S2 as the product of a d x k and a k x m factor (k = 3; C + 2 with C outputs)."""
        parts = [t.factors() for t in (self.S1, self.S12, self.S2)]
        return torch.cat([left for left, _ in parts], 1), torch.cat([right for _, right in parts])

    def E_dense(self, X_B: torch.Tensor) -> torch.Tensor:
        return self.coef * (X_B.T @ self.D_perp)

    def terms(self, X_B: torch.Tensor) -> "Terms":
        """The four terms as factors, E = coef X_B^T D_perp among them."""
        return Terms(self.S1, self.S12, self.S2, Factored(self.coef, X_B, self.D_perp))


@dataclass
class Factored:
    """coef * L^T R kept as its factors (L: n x d, R: n x m)."""

    coef: float
    L: torch.Tensor
    R: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.coef * (self.L.T @ self.R)


@dataclass
class Terms:
    """G_loss = S1 + S12 + S2 + E: the rank-one terms as factor vectors, E as its factors."""

    S1: RankOne
    S12: RankOne
    S2: RankOne
    E: Factored

    def dense(self) -> torch.Tensor:
        """S1 + S12 + S2 + E as one d x m matrix (for checks and small problems)."""
        return self.S1.dense() + self.S12.dense() + self.S2.dense() + self.E.dense()


def split(
    coef: float,
    X_B: torch.Tensor,
    zeta: float,
    z: torch.Tensor,
    q: torch.Tensor,
    r: torch.Tensor,
    a: torch.Tensor,
    Sp: torch.Tensor,
    mu: torch.Tensor,
    mu_error: float = 0.0,
) -> Decomposition:
    """The four terms of coef * X^T [(r a^T) o Sp] for X = X_B + zeta z q^T and centre mu of Sp's columns.

    X_B: n x d, z: n, q: d, r: n, a: m, Sp: n x m, mu: m. Exact for any mu (the identity does not
    depend on it); which mu is meaningful is the caller's choice (population or empirical).
    C outputs per sample: r n x C, Sp C x n x m (one J per output), mu m x C, and the right factor
    is sum_c (r_c a^T) o Sp_c: S1 has rank <= C (matrix factors), S12, S2 stay rank one."""
    if r.ndim == 2:
        return _split_outputs(coef, X_B, zeta, z, q, r, a, Sp, mu, mu_error)
    a_mu = a * mu
    D_perp = torch.outer(r, a).mul_(Sp - mu[None, :])  # (r a^T) o (Sp - 1 mu^T), two n x m allocations
    return Decomposition(
        S1=RankOne(coef, X_B.T @ r, a_mu),
        S12=RankOne(coef * zeta * float(z @ r), q, a_mu),
        S2=RankOne(coef * zeta, q, D_perp.T @ z),  # a o (Sigma'_perp^T (z o r)) = D_perp^T z
        D_perp=D_perp,
        mu=mu,
        mu_error=mu_error,
        coef=coef,
    )


def _split_outputs(coef, X_B, zeta, z, q, R, a, Sp, mu, mu_error) -> Decomposition:
    """split for C outputs: D = sum_c (R_c a^T) o Sp_c = R (a o mu)^T + D_perp, so
    S1 = coef (X_B^T R)(a o mu)^T (rank <= C), S12 = coef zeta q ((a o mu) R^T z)^T, S2 = coef zeta q (D_perp^T z)^T."""
    a_mu = a[:, None] * mu  # m x C
    D_perp = torch.zeros_like(Sp[0])
    for c in range(R.shape[1]):
        D_perp += torch.outer(R[:, c], a).mul_(Sp[c] - mu[None, :, c])
    return Decomposition(
        S1=RankOne(coef, X_B.T @ R, a_mu),
        S12=RankOne(coef * zeta, q, a_mu @ (R.T @ z)),
        S2=RankOne(coef * zeta, q, D_perp.T @ z),
        D_perp=D_perp,
        mu=mu,
        mu_error=mu_error,
        coef=coef,
    )
