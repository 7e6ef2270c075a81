"""Exact spectra of factored matrices A = coef * L^T R (L: n x d, R: n x m) without dense SVDs.

When n < min(d, m), A = coef * Q (R_L R) for the thin QR L^T = Q R_L, so A's nonzero singular
values are those of the n x m matrix M = R_L R: we take them from the n x n Gram M M^T.
Otherwise the Gram of the smaller side of the dense matrix is used. Top-k vectors follow
from the Gram's eigenvectors by one product each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Spectrum:
    values: torch.Tensor  # all singular values, descending (length min(d, m))
    U: torch.Tensor  # d x k top left singular vectors
    s: torch.Tensor  # k top singular values
    V: torch.Tensor  # m x k top right singular vectors
    fro2: float  # squared Frobenius norm


def _eigh_desc(C: torch.Tensor, k: int):
    lam, P = torch.linalg.eigh(C)
    lam, P = lam.flip(0).clamp_min(0), P.flip(1)
    return lam, P[:, :k]


def spectrum(L: torch.Tensor, R: torch.Tensor, coef: float, k: int, dense_add: torch.Tensor | None = None) -> Spectrum:
    """Singular values of A = coef * L^T R (+ dense_add) and its top-k triplets."""
    n, d = L.shape
    m = R.shape[1]
    k = min(k, d, m)
    if dense_add is None and n < min(d, m):
        R_L = torch.linalg.qr(L.T, mode="r")[1]  # n x n
        M = R_L @ R
        lam, P = _eigh_desc(M @ M.T, k)
        s = lam.sqrt()
        V = (M.T @ P) / s[:k].clamp_min(torch.finfo(s.dtype).tiny)
        U = L.T @ (R @ V) / s[:k].clamp_min(torch.finfo(s.dtype).tiny)
        values = torch.cat([s, s.new_zeros(min(d, m) - n)])
        return Spectrum(coef * values, U, coef * s[:k], V, coef**2 * float(lam.sum()))
    A = coef * (L.T @ R)
    if dense_add is not None:
        A = A + dense_add
    return dense_spectrum(A, k)


def dense_spectrum(A: torch.Tensor, k: int) -> Spectrum:
    """Spectrum of a dense matrix via the Gram of its smaller side."""
    d, m = A.shape
    k = min(k, d, m)
    tiny = torch.finfo(A.dtype).tiny
    if d <= m:
        lam, U = _eigh_desc(A @ A.T, k)
        s = lam.sqrt()
        V = A.T @ U / s[:k].clamp_min(tiny)
    else:
        lam, V = _eigh_desc(A.T @ A, k)
        s = lam.sqrt()
        U = A @ V / s[:k].clamp_min(tiny)
    return Spectrum(s, U, s[:k], V, float(lam.sum()))
