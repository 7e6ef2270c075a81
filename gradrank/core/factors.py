"""The currency of the engine: a weight gradient in factored form (arXiv 2510.01303, Prop. 2.1).

Scaling convention (the one place it is stated): for n rows (samples, or samples x tokens),
    G = scale * H^T D / n            (d_in x d_out)
with H (n x d_in) the layer input and D (n x d_out) the back-propagated errors of the mean loss
times n, i.e. dl_i/d(output_i) for row i. scale is 1 for a captured layer and the output scale
gamma_m of the paper's network (G = (gamma_m/n) X^T [(r a^T) o sigma'(X W^T)], Prop. 2.1).
Where the samples do not interact, D factors as D = diag(r) J diag(a): r (n) the per-sample
residue dl/df, J (n x d_out) the Jacobian of the output, a (d_out) a per-column scale of J (the
outer weights for the paper's network, ones for any other layer). With C outputs per sample,
r is n x C and J is C x n x d_out (D = sum_c diag(r_c) J_c diag(a)). Nothing here knows which
model made the factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Factors:
    """G = scale * H^T D / n, and where defined D = diag(r) J diag(a) (module docstring)."""

    H: torch.Tensor  # n x d_in
    D: torch.Tensor  # n x d_out
    r: torch.Tensor | None = None  # n (C outputs: n x C)
    J: torch.Tensor | None = None  # n x d_out (C outputs: C x n x d_out)
    a: torch.Tensor | None = None  # d_out, the column scale of J (None: ones)
    samples: int | None = None  # N samples (n rows may be samples x tokens x calls); None: n
    scale: float = 1.0
    G: torch.Tensor | None = None  # the same G computed another way (autograd's), d_in x d_out; None: from H, D

    @property
    def n(self) -> int:
        return self.H.shape[0]

    @property
    def coef(self) -> float:
        """scale / n, so that G = coef * H^T D."""
        return self.scale / self.H.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.D.dtype

    def gradient(self) -> torch.Tensor:
        """G, dense (d_in x d_out): the given G where there is one, else coef * H^T D."""
        return self.coef * (self.H.T @ self.D) if self.G is None else self.G

    def mv(self, V: torch.Tensor) -> torch.Tensor:
        """G V for a thin V (d_out x k), without forming G."""
        return self.coef * (self.H.T @ (self.D @ V)) if self.G is None else self.G @ V

    def rmv(self, U: torch.Tensor) -> torch.Tensor:
        """G^T U for a thin U (d_in x k)."""
        return self.coef * (self.D.T @ (self.H @ U)) if self.G is None else self.G.T @ U

    def residue_form(self, tol: float | None = None) -> tuple[torch.Tensor, torch.Tensor, str, float | None]:
        """(r, J, form, error): the residue form D = diag(r) J diag(a) where it holds to `tol` relative
        (default sqrt(eps): rounding, not interaction between samples), else the general form r = 1,
        J = D (with a = ones). error = ||D - diag(r) J diag(a)|| / ||D|| (None: no r, J given)."""
        if self.r is None or self.J is None:
            return torch.ones(self.n, dtype=self.D.dtype, device=self.D.device), self.D, "general", None
        rJ = self.r[:, None] * self.J if self.r.ndim == 1 else torch.einsum("nc,cnm->nm", self.r, self.J)
        if self.a is not None:
            rJ = rJ * self.a
        err = float((self.D - rJ).norm()) / max(float(self.D.norm()), 1e-300)
        if err <= (torch.finfo(self.D.dtype).eps ** 0.5 if tol is None else tol):
            return self.r, self.J, "residue", err
        return torch.ones(self.n, dtype=self.D.dtype, device=self.D.device), self.D, "general", err
