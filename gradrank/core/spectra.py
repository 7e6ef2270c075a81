"""Spectra of factored matrices A = coef * L^T R (L: n x d, R: n x m) without dense SVDs.

Exact route, n < min(d, m): with the thin QR L^T = Q R_L, A = coef * Q (R_L R), so A's nonzero
singular values are those of the n x m matrix M = R_L R. They come from the n x n Gram M M^T
with one tridiagonal reduction: every eigenvalue, and eigenvectors of the top k only (on the CPU
scipy.linalg's public LAPACK wrappers: sytrd, sterf and stemr by eigh_tridiagonal, ormqr;
torch.linalg.eigh elsewhere). Otherwise the Gram of the dense matrix's smaller side is used. `spectrum_pair` adds the values of a rank-j change of the right
factor (G and its error term E) from the same QR and Gram.

Accuracy: the Gram's eigenvalues carry an absolute error ~ eps s_1^2, so every singular value is
right in the normwise sense |s_i - s_hat_i| <~ sqrt(eps) s_1 (~1e-8 s_1 in float64), and to a
relative eps (s_1 / s_i)^2 when s_i >> sqrt(eps) s_1. When a top-k value falls below
eps^(1/4) s_1 the Gram no longer resolves its vector and an SVD of the factor is taken instead;
`accurate=True` always takes it (backward stable, several times slower). Float32 factors have
their Gram formed and diagonalised in float64 (`_gram_dtype`): their values are then right to
~1.5e-8 s_1, not float32's 3.5e-4 s_1, which sums over the whole spectrum (effective rank, energy
ranks, Frobenius norms and shares) could not afford.

Fast route (`top_k`): block Krylov on an operator (e.g. `factored`: v -> coef L^T (R v)) for the
top-k triplets only, stopped on a residual test, warm-started along a training trajectory; it
never forms anything larger than n x block.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from gradrank.core.floors import SCALE_SAFE, eps, resolution, tiny


@dataclass
class Spectrum:
    values: torch.Tensor  # all singular values, descending (length min(d, m))
    U: torch.Tensor  # d x k top left singular vectors
    s: torch.Tensor  # k top singular values
    V: torch.Tensor  # m x k top right singular vectors
    fro2: float  # squared Frobenius norm


@dataclass
class Triplets:
    """Top singular triplets from `top_k`: the whole block (the k wanted and the extra columns that
    speed convergence, a warm start for the next call), with the residual the first k were accepted at."""

    U: torch.Tensor  # d x b
    s: torch.Tensor  # b, descending
    V: torch.Tensor  # m x b
    k: int
    residual: float  # max_{i<k} ||A v_i - s_i u_i|| / s_1 (A^T u_i = s_i v_i holds exactly)
    iterations: int
    fallback: bool = False  # not converged within max_dim columns: `exact()` was used


@contextmanager
def one_thread_each(device: torch.device):
    """A context for running independent spectra side by side in threads: torch and the BLAS
    libraries held to one thread each (no OpenMP team waiting on a core another task holds),
    restored after. Yields how many tasks may run at once: torch's former thread count on the CPU,
    1 elsewhere (or when already held to one thread)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield 1
        return
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield threads
    finally:
        torch.set_num_threads(threads)


def _eig_top(C: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues of the symmetric C (descending, clamped at 0) and its top-k eigenvectors
    (n x k, descending). On the CPU (C is overwritten) one tridiagonal reduction C = Q T Q^T serves both: all of T's
    eigenvalues (sterf, O(n^2)), eigenvectors of the top k only (stemr, O(nk)), times Q (ormqr);
    elsewhere torch.linalg.eigh computes all n eigenvectors, of which k are kept."""
    n = C.shape[0]
    if C.device.type != "cpu" or n < 3:
        lam, P = torch.linalg.eigh(C)
        return lam.flip(0).clamp_min(0), P[:, n - k :].flip(1)
    x = "s" if C.dtype == torch.float32 else "d"
    lapack = scipy.linalg.lapack
    with threadpool_limits(limits=1, user_api="blas"):  # scipy's OpenBLAS threads would spin against torch's
        lwork = int(getattr(lapack, x + "sytrd_lwork")(n, lower=1)[0])
        # C^T: the Fortran view of C's memory, read below its diagonal (C = M M^T need not be symmetric to the bit)
        refl, diag, off, tau, info = getattr(lapack, x + "sytrd")(C.numpy().T, lower=1, lwork=max(lwork, 1), overwrite_a=1)
        if info:
            raise RuntimeError(f"LAPACK {x}sytrd failed (info = {info})")
        lam = scipy.linalg.eigvalsh_tridiagonal(diag, off, lapack_driver="sterf")  # ascending
        if k == 0:
            return torch.from_numpy(lam.copy()).flip(0).clamp_min(0), C.new_zeros(n, 0)
        try:
            Z = scipy.linalg.eigh_tridiagonal(diag, off, select="i", select_range=(n - k, n - 1), lapack_driver="stemr")[1]
        except np.linalg.LinAlgError:  # MRRR declined (rare): a dense solver on T instead
            Z = np.linalg.eigh(np.diag(diag) + np.diag(off, 1) + np.diag(off, -1))[1][:, n - k :]
        P = np.asfortranarray(Z[:, ::-1])  # descending
        # Q = diag(1, Q~), Q~ from the reflectors stored below the subdiagonal (LAPACK's ormtr, uplo = L)
        P[1:] = getattr(lapack, x + "ormqr")("L", "N", refl[1:, :-1], tau, P[1:], lwork=max(1, 64 * k))[0]
    return torch.from_numpy(lam.copy()).flip(0).clamp_min(0), torch.from_numpy(np.array(P, order="C"))


def _resolved(lam: torch.Tensor, k: int) -> bool:
    """Gram eigenvalues give s_k to a relative error ~ eps (s_1 / s_k)^2: trusted while that is
    below sqrt(eps), else the caller takes an SVD of the factor itself (e.g. a strong spike, nu ~ 2)."""
    return bool(lam[k - 1] >= lam[0] * resolution(lam.dtype)) if k else True


def _gram_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a Gram is formed and diagonalised in: float64 for float32 factors. A float32 Gram's
    eigenvalues carry ~eps32 s_1^2 (s_i off by up to 3.5e-4 s_1), which biases every sum over the
    whole spectrum (effective rank, energy ranks, ||E||_F): MiniLM's output.dense read an effective rank
    of 7.128 for 6.991. In float64 the values of the float32 matrix are right to ~1.5e-8 s_1, better
    than float32's own svdvals; they are returned in the factors' dtype."""
    return torch.float64 if dtype == torch.float32 else dtype


def _gram(M: torch.Tensor) -> torch.Tensor:
    """M M^T in _gram_dtype."""
    W = M.to(_gram_dtype(M.dtype))
    return W @ W.T


def _factor_spectrum(
    M: torch.Tensor, k: int, accurate: bool, C: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """All singular values of the wide M (r <= c), its top-k right singular vectors, ||M||_F^2.
    C: M M^T (in _gram_dtype) when the caller has it (overwritten)."""
    C = _gram(M) if C is None else C
    fro2 = float(C.diagonal().sum())
    if not accurate:
        lam, P = _eig_top(C, k)
        s = lam.sqrt()
        if _resolved(lam, k):
            V = (M.to(C.dtype).T @ P) / s[:k].clamp_min(tiny(s.dtype))
            return s.to(M.dtype), V.to(M.dtype), fro2
        if C.dtype != M.dtype:  # a float64 Gram's values beat float32's SVD (~6e-8 s_1); only the vectors need it
            return s.to(M.dtype), torch.linalg.svd(M, full_matrices=False)[2][:k].T, fro2
    if k == 0:
        return torch.linalg.svdvals(M), M.new_zeros(M.shape[1], 0), fro2
    _, s, Vh = torch.linalg.svd(M, full_matrices=False)
    return s, Vh[:k].T, fro2


def factored_route(n: int, d: int, m: int) -> bool:
    """Whether the spectrum of coef L^T R (n rows, d x m) comes from its factors (n < min(d, m)) or the dense matrix."""
    return n < min(d, m)


def spectrum(
    L: torch.Tensor, R: torch.Tensor, coef: float, k: int, dense_add: torch.Tensor | None = None, accurate: bool = False
) -> Spectrum:
    """Singular values of A = coef * L^T R (+ dense_add) and its top-k triplets (k = 0: values only)."""
    n, d = L.shape
    m = R.shape[1]
    k = min(k, d, m)
    if dense_add is not None or not factored_route(n, d, m):
        A = coef * (L.T @ R)
        if dense_add is not None:
            A += dense_add
        return dense_spectrum(A, k, accurate)
    k = min(k, n)
    R_L = torch.linalg.qr(L.T, mode="r")[1]  # n x n, L^T = Q R_L
    s, V, fro2 = _factor_spectrum(R_L @ R, k, accurate)
    return _from_factor(L, R, coef, s, V, fro2, d, m)


def spectrum_pair(
    L: torch.Tensor,
    R: torch.Tensor,
    U: torch.Tensor,
    B: torch.Tensor,
    coef: float,
    k: int,
    exact_other,
    accurate: bool = False,
    rank_other: int | None = None,
) -> tuple[Spectrum, Spectrum]:
    """Spectrum of A = coef L^T [R; 0] (values and top-k triplets) and the values of
    A' = coef L^T ([R; 0] - U B^T), a rank-j change of A's right factor, from one QR and one Gram.

    L: p x d, R: n x m (n <= p; its missing rows are zero), U: p x j, B: m x j. With L^T = Q R_L,
    A = coef Q [M; 0], M = R_L[:n, :n] R, and A' = coef Q R_L([R; 0] - U B^T), whose Gram is
        K' = [M M^T, 0; 0, 0] - Z Y^T - Y Z^T + Y (B^T B) Y^T,   Y = R_L U,  Z = [M B; 0],
    a rank-2j update of A's Gram: no second QR, product or Gram. Its eigenvalues carry ~eps s_1(A)^2
    absolutely, so A''s values are right to ~sqrt(eps) s_1(A) normwise instead of sqrt(eps) s_1(A');
    when s_1(A) > 8 s_1(A') (a strong spike) A' is recomputed by `exact_other()` (-> Spectrum)
    instead; likewise for shapes the Gram route does not fit.
    rank_other: a known bound on A''s rank (default min(p, n + j)); the values past it are zero."""
    p, d = L.shape
    n, m = R.shape
    if accurate or not factored_route(p, d, m):
        return spectrum(L[:n], R, coef, k, accurate=accurate), exact_other()
    R_L = torch.linalg.qr(L.T, mode="r")[1]  # p x p
    M = R_L[:n, :n] @ R
    C = _gram(M)
    W, B = M.to(C.dtype), B.to(C.dtype)  # the Gram's dtype (float64 for float32 factors)
    Y, Z = (R_L @ U).to(C.dtype), torch.cat([W @ B, W.new_zeros(p - n, B.shape[1])])
    K = _updated_gram(C, Y, Z, B, n)
    s, V, fro2, lam_other = _values_pair(M, C, K, min(k, n, d, m), accurate)
    lam_other[min(p, n + B.shape[1]) if rank_other is None else rank_other :] = 0  # rounding, not spectrum
    if not 64 * lam_other[0] >= s[0] ** 2:
        other = exact_other()
    else:
        values = torch.cat([lam_other.sqrt(), lam_other.new_zeros(min(d, m) - p)]).to(L.dtype)
        other = Spectrum(
            coef * values, L.new_zeros(d, 0), values.new_zeros(0), L.new_zeros(m, 0), coef**2 * float(lam_other.sum())
        )
    return _from_factor(L[:n], R, coef, s, V, fro2, d, m), other


def _updated_gram(C: torch.Tensor, Y: torch.Tensor, Z: torch.Tensor, B: torch.Tensor, n: int) -> torch.Tensor:
    """The Gram of M' = [M; 0] - Y B^T (p x c) from M's Gram C (n x n, n <= p) and Z = [M B; 0]:
    K' = [C, 0; 0, 0] - Z Y^T - Y Z^T + Y (B^T B) Y^T, a rank-2j update (C is left as it is)."""
    K = (Y @ (B.T @ B / 2) - Z) @ Y.T
    K = K + K.T
    K[:n, :n] += C
    return K


def _values_pair(M: torch.Tensor, C: torch.Tensor, K: torch.Tensor, k: int, accurate: bool):
    """(M's values, top-k right vectors, ||M||_F^2 from its Gram C) and the eigenvalues of the other
    Gram K, descending."""
    s, V, fro2 = _factor_spectrum(M, k, accurate, C)
    return s, V, fro2, _eig_top(K, 0)[0]


def _from_factor(L, R, coef, s, V, fro2, d, m) -> Spectrum:
    """A = coef L^T R's Spectrum from M's values s, top right vectors V and ||M||_F^2."""
    k = V.shape[1]
    U = _A(L, R, 1.0, V) / s[:k].clamp_min(tiny(s.dtype))
    values = torch.cat([s, s.new_zeros(min(d, m) - s.numel())])
    return Spectrum(coef * values, U, coef * s[:k], V, coef**2 * fro2)


def dense_spectrum(A: torch.Tensor, k: int, accurate: bool = False) -> Spectrum:
    """Spectrum of a dense matrix via the Gram of its smaller side."""
    k = min(k, *A.shape)
    wide = A.shape[0] <= A.shape[1]
    M = A if wide else A.T
    s, Y, fro2 = _factor_spectrum(M, k, accurate)  # Y: right singular vectors of M
    return _from_dense(M, wide, s, Y, fro2)


def dense_spectrum_pair(
    A: torch.Tensor, left: torch.Tensor, right: torch.Tensor, k: int, accurate: bool = False
) -> tuple[Spectrum, Spectrum]:
    """Spectrum of the dense A (d x m: values, top-k triplets) and the values of A' = A - left right
    (left d x j, right j x m) from one Gram of A's smaller side: A''s Gram is a rank-2j update of
    A's (as in `spectrum_pair`, with R_L = I), so no second d x m matrix, product or Gram is formed.
    Same accuracy: A''s values are right to ~sqrt(eps) s_1(A) normwise, and A' is recomputed
    densely when s_1(A) > 8 s_1(A') (its values would drown in A's rounding)."""
    k = min(k, *A.shape)
    wide = A.shape[0] <= A.shape[1]
    M, Y, B = (A, left, right.T) if wide else (A.T, right.T, left)  # M' = M - Y B^T
    exact_other = lambda: dense_spectrum(torch.addmm(A, left, right, alpha=-1), 0, accurate)  # noqa: E731
    if accurate:
        return dense_spectrum(A, k, accurate), exact_other()
    C = _gram(M)
    W, Y, B = M.to(C.dtype), Y.to(C.dtype), B.to(C.dtype)  # the Gram's dtype (float64 for float32 factors)
    K = _updated_gram(C, Y, W @ B, B, M.shape[0])
    s, V, fro2, lam_other = _values_pair(M, C, K, k, accurate)
    if not 64 * lam_other[0] >= s[0] ** 2:
        other = exact_other()
    else:
        other = Spectrum(
            lam_other.sqrt().to(A.dtype),
            A.new_zeros(A.shape[0], 0),
            A.new_zeros(0),
            A.new_zeros(A.shape[1], 0),
            float(lam_other.sum()),
        )
    return _from_dense(M, wide, s, V, fro2), other


def _from_dense(M: torch.Tensor, wide: bool, s: torch.Tensor, Y: torch.Tensor, fro2: float) -> Spectrum:
    """A's Spectrum from M (A or A^T, wide), its values s, top right vectors Y and ||M||_F^2."""
    k = Y.shape[1]
    X = M @ Y / s[:k].clamp_min(tiny(s.dtype))
    U, V = (X, Y) if wide else (Y, X)
    return Spectrum(s, U, s[:k], V, fro2)


def data_spectrum(X: torch.Tensor, k: int) -> Spectrum:
    """dense_spectrum of a data matrix of any scale: X is first scaled by a power of two (exact)
    where its Gram could over- or underflow, and the values scaled back. The Gram's values carry
    ~eps s_1^2 absolutely (module docstring), which a covariance spectrum or its top direction can
    afford; an SVD costs several times as much (docs/performance.md)."""
    top = float(X.abs().max()) if X.numel() else 0.0
    c = 1.0 if top == 0.0 or SCALE_SAFE[0] < top < SCALE_SAFE[1] else 2.0 ** math.frexp(top)[1]
    sp = dense_spectrum(X / c if c != 1.0 else X, k)
    return sp if c == 1.0 else Spectrum(sp.values * c, sp.U, sp.s * c, sp.V, sp.fro2 * c * c)


def _A(L: torch.Tensor, R: torch.Tensor, coef: float, V: torch.Tensor) -> torch.Tensor:
    """coef L^T (R V) for a thin V, computed transposed, ((V^T R^T) L)^T: BLAS runs thin products
    faster with the long dimension last (docs/performance.md)."""
    return coef * ((V.T @ R.T) @ L).T


def _At(L: torch.Tensor, R: torch.Tensor, coef: float, Q: torch.Tensor) -> torch.Tensor:
    """coef R^T (L Q) for a thin Q, in the same order."""
    return coef * ((Q.T @ L.T) @ R).T


def _orth(K: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    """Orthonormal basis of K's component outside span(Q) (block Gram-Schmidt, twice), rank-revealing:
    directions below sqrt(eps) ||K|| (already in span(Q), or dependent) are dropped, so a Krylov
    space that has exhausted A's range ends instead of filling up with rounding noise."""
    scale = float(K.norm())
    if Q is not None:
        for _ in range(2):
            K = K - Q @ (Q.T @ K)
    floor = resolution(K.dtype) * scale
    Qk, Rk = torch.linalg.qr(K)
    if bool((Rk.diagonal().abs() > floor).all()):  # the usual case; else the SVD says which directions are new
        return Qk
    U, S, _ = torch.linalg.svd(K, full_matrices=False)
    return U[:, S > floor]


def factored(L: torch.Tensor, R: torch.Tensor, coef: float):
    """(V -> A V, U -> A^T U) for A = coef * L^T R, never formed: the operator `top_k` takes."""
    return (lambda V: _A(L, R, coef, V)), (lambda U: _At(L, R, coef, U))


def top_k(mv, rmv, start: torch.Tensor, k: int, tol: float = 1e-6, max_dim: int | None = None, exact=None) -> Triplets:
    """Top-k singular triplets of an operator A (d x m) given by mv (V -> A V) and rmv (U -> A^T U),
    by block Krylov (block Lanczos with full reorthogonalisation) from the d x b block `start`
    (b > k: random, A times a random block, or the previous call's U when tracking a trajectory).

    Each step applies A^T then A to one d x b block; the Rayleigh-Ritz projection of the whole space
    gives A^T u_i = s_i v_i exactly, and it stops once ||A v_i - s_i u_i|| <= tol * s_1 for all
    i < k. Along a training trajectory the top subspace moves little per step, so a warm start
    passes at once. Past max_dim columns (default min(max(20 b, 400), d, m)) without meeting the
    test, `exact()` (-> Spectrum with >= b triplets) is used and flagged, or, without `exact`, the
    best triplets so far are returned with their residual."""
    d, b = start.shape
    Q = _orth(start, None)
    Qs, Ws, Ks, ws = [], [], [], []  # orthonormal blocks, A^T Q_i, A A^T Q_i / w_i, the scales w_i
    it, dim = 0, 0
    while True:
        it += 1
        W = rmv(Q)  # A^T Q_i, m x b
        w = float(torch.linalg.vector_norm(W, float("inf"))) or 1.0
        K = mv(W / w)  # A W_i / w_i, d x b: neither over- nor underflows, however large or small A is
        Qs.append(Q), Ws.append(W), Ks.append(K), ws.append(torch.full((Q.shape[1],), w, dtype=W.dtype, device=W.device))
        dim += Q.shape[1]
        limit = max_dim or min(max(20 * b, 400), d, W.shape[0])
        Wall, Kall, Qall, wall = torch.cat(Ws, 1), torch.cat(Ks, 1), torch.cat(Qs, 1), torch.cat(ws)
        top = float(wall.max())
        c = 1.0 if SCALE_SAFE[0] < top < SCALE_SAFE[1] else top  # scale the Gram only where it could over- or underflow
        Wc = Wall if c == 1.0 else Wall / c
        lam, P = _eig_top(Wc.T @ Wc, min(b, dim))  # (Q^T A)(Q^T A)^T / c^2
        s = c * lam[: P.shape[1]].sqrt()
        inv = torch.where(s > s[0] * eps(s.dtype), 1 / s, 0.0)  # rank-deficient A: zero, not huge, columns
        U, AV = Qall @ P, Kall @ (P * wall[:, None] * inv)  # A v_i = A W p_i / s_i
        residual = float((AV[:, :k] - U[:, :k] * s[:k]).norm(dim=0).max() / s[0].clamp_min(tiny(s.dtype)))
        if residual <= tol:
            return Triplets(U, s, Wall @ P * inv, k, residual, it)
        Q = _orth(K, Qall)[:, : limit - dim] if dim < limit else K[:, :0]
        if not Q.shape[1]:  # the space reached max_dim, or is invariant (all of A's range: nothing better exists)
            if exact is None or dim < limit:
                return Triplets(U, s, Wall @ P * inv, k, residual, it)
            spec = exact()
            return Triplets(spec.U[:, :b], spec.s[:b], spec.V[:, :b], k, residual, it, True)
