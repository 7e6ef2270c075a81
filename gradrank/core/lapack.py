"""The LAPACK plumbing of the spectra (linalg.spectral holds the mathematics): scipy's LAPACK
routines called without the GIL, BLAS thread limits, and the tridiagonal eigensolver route.

sytrd, sterf, stemr and ormqr are function pointers from scipy's Cython LAPACK table
(scipy.linalg.cython_lapack, public API: the capsules of its __pyx_capi__) called through ctypes,
which releases the GIL, so two reductions can run on two cores at once. The module is loaded from
its file without running scipy/linalg/__init__ (docs/performance.md says what that import costs).
Both the table and the BLAS thread pools are found when this module is imported, like any import,
not inside the first analysis (there they cost about three times as much: docs/performance.md).
"""

from __future__ import annotations

import functools

import numpy as np

ARGS = {"sytrd": 10, "sterf": 4, "stemr": 21, "ormqr": 13}  # pointer arguments of each routine


@functools.lru_cache(maxsize=1)
def cython_lapack():
    """scipy.linalg.cython_lapack: the imported module when scipy.linalg is loaded already, else the
    extension loaded from its file without scipy/linalg/__init__, whose imports the table does not
    need (docs/performance.md); the plain import if the file is not where scipy keeps it."""
    import importlib
    import importlib.machinery
    import importlib.util
    import os
    import sys

    name = "scipy.linalg.cython_lapack"
    if name in sys.modules:
        return sys.modules[name]
    try:
        folder = os.path.join(os.path.dirname(importlib.util.find_spec("scipy").origin), "linalg")
        path = next(
            p for s in importlib.machinery.EXTENSION_SUFFIXES if os.path.exists(p := os.path.join(folder, "cython_lapack" + s))
        )
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception:  # noqa: BLE001 - any unusual layout: the ordinary import
        return importlib.import_module(name)


@functools.lru_cache(maxsize=1)
def blas_pools():
    """threadpoolctl's view of the loaded BLAS libraries (scipy's OpenBLAS among them), found once."""
    from threadpoolctl import ThreadpoolController

    cython_lapack()  # loads the library to be found
    return ThreadpoolController()


def one_blas_thread():
    """A context in which the BLAS libraries use one thread each (their helper threads would
    otherwise spin against torch's OpenMP pool, or wait on the core another reduction holds)."""
    return blas_pools().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=None)
def routine(name: str):
    """A LAPACK routine (dsytrd, sstemr, ...) from scipy's Cython LAPACK table as a ctypes function
    of pointers (Fortran convention: every argument by reference)."""
    import ctypes

    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = cython_lapack().__pyx_capi__[name]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * ARGS[name[1:]])(address)


def call(name: str, *args) -> None:
    """routine(name) on numpy arrays (one-element arrays for scalars and characters), by their memory."""
    routine(name)(*(a.ctypes.data for a in args))


def _ints(*values):
    return [np.array([v], np.int32) for v in values]


def _prefix(dt) -> str:
    return {np.dtype("float32"): "s", np.dtype("float64"): "d"}[np.dtype(dt)]


def tridiagonal(A):
    """A = Q T Q^T, in place when A is contiguous, for a symmetric float32/64 numpy array A (LAPACK
    sytrd, uplo = L of the Fortran view, whose memory is A's own), and all eigenvalues of T (sterf), ascending.
    Returns the reflectors (Fortran view of A), T's diagonal and off-diagonal, tau and the eigenvalues."""
    A = np.ascontiguousarray(A)  # LAPACK reads the memory: a strided view is copied first
    n, dt = A.shape[0], A.dtype
    x = _prefix(dt)
    N, lwork, info = _ints(n, -1, 0)
    uplo = np.array([b"L"], "S1")
    d, e, tau, work = np.empty(n, dt), np.empty(max(n - 1, 1), dt), np.empty(max(n - 1, 1), dt), np.empty(1, dt)
    F = A.T  # Fortran-ordered view of the same memory (A is symmetric)
    call(x + "sytrd", uplo, N, F, N, d, e, tau, work, lwork, info)  # workspace query
    lwork[0] = int(work[0])
    work = np.empty(int(lwork[0]), dt)
    call(x + "sytrd", uplo, N, F, N, d, e, tau, work, lwork, info)
    if info[0]:
        raise RuntimeError(f"LAPACK {x}sytrd failed (info = {info[0]})")
    diag, off = d.copy(), e[: n - 1].copy()
    call(x + "sterf", N, d, e, info)
    if info[0]:
        raise RuntimeError(f"LAPACK {x}sterf did not converge (info = {info[0]})")
    return F, diag, off, tau[: n - 1], d


def tridiagonal_values(diag: np.ndarray, off: np.ndarray) -> np.ndarray:
    """All eigenvalues, ascending, of the symmetric tridiagonal T = (diag, off) (LAPACK sterf: no BLAS)."""
    d, e = np.array(diag, order="C"), np.append(np.asarray(off, diag.dtype), 0)
    N, info = _ints(d.shape[0], 0)
    call(_prefix(d.dtype) + "sterf", N, d, e, info)
    if info[0]:
        raise RuntimeError(f"LAPACK {_prefix(d.dtype)}sterf did not converge (info = {info[0]})")
    return d


def stemr_top(diag: np.ndarray, off: np.ndarray, k: int) -> tuple[np.ndarray | None, int]:
    """Eigenvectors (n x k, Fortran order, ascending) of the symmetric tridiagonal T = (diag, off)
    for its k largest eigenvalues (LAPACK stemr, MRRR, indices n-k+1 .. n; scipy's wrapper's
    workspace sizes), and LAPACK's info; None when MRRR declined (info != 0 or fewer vectors)."""
    n, dt = diag.shape[0], diag.dtype
    d, e = diag.copy(), np.append(off, 0).astype(dt)  # stemr overwrites both; e has n entries
    N, il, iu, found, ldz, nzc, tryrac, lwork, liwork, info = _ints(n, n - k + 1, n, 0, n, k, 1, 18 * n, 10 * n, 0)
    vl, vu, w, Z = np.zeros(1, dt), np.zeros(1, dt), np.empty(n, dt), np.empty((n, k), dt, order="F")
    isuppz, work, iwork = np.empty(2 * n, np.int32), np.empty(18 * n, dt), np.empty(10 * n, np.int32)
    jobz, rng = np.array([b"V"], "S1"), np.array([b"I"], "S1")
    args = (jobz, rng, N, d, e, vl, vu, il, iu, found, w, Z, ldz, nzc, isuppz, tryrac, work, lwork, iwork, liwork, info)
    call(_prefix(dt) + "stemr", *args)
    return (Z if not info[0] and found[0] == k else None), int(info[0])


def ormqr_left(refl: np.ndarray, tau: np.ndarray, C: np.ndarray, lwork: int) -> None:
    """C <- Q C in place (LAPACK ormqr, side = L, trans = N), Q the product of the reflectors stored
    below the diagonal of the Fortran array refl (m x kq) with factors tau; C Fortran-ordered, m x c."""
    dt = C.dtype
    refl, C2 = np.asfortranarray(refl), np.asfortranarray(C)  # LAPACK reads the memory, like scipy's wrapper
    (m, c), kq = C2.shape, refl.shape[1]
    M, Nc, K, lda, ldc, lw, info = _ints(m, c, kq, max(refl.shape[0], 1), max(m, 1), lwork, 0)
    side, trans, work = np.array([b"L"], "S1"), np.array([b"N"], "S1"), np.empty(max(lwork, 1), dt)
    call(_prefix(dt) + "ormqr", side, trans, M, Nc, K, refl, lda, np.ascontiguousarray(tau), C2, ldc, work, lw, info)
    if info[0]:
        raise RuntimeError(f"LAPACK {_prefix(dt)}ormqr failed (info = {info[0]})")
    C[...] = C2


def eig_top(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All eigenvalues (ascending) of the symmetric float32/64 array C and its top-k eigenvectors
    (descending order, n x k), from one tridiagonal reduction; C is overwritten."""
    n = C.shape[0]
    with one_blas_thread():
        refl, diag, off, tau, lam = tridiagonal(C)  # C = Q T Q^T
        if k == 0:
            return lam, np.zeros((n, 0), C.dtype)
        # eigenvectors of T for the k largest eigenvalues, then Q times them
        Z, _ = stemr_top(diag, off, k)
        if Z is None:  # MRRR declined (rare): a dense solver on the tridiagonal T instead
            import torch

            e = torch.from_numpy(off)
            T = torch.diag(torch.from_numpy(diag)) + torch.diag(e, 1) + torch.diag(e, -1)
            Z = torch.linalg.eigh(T)[1][:, n - k :].numpy()
        P = np.asfortranarray(Z[:, ::-1])
        # Q = diag(1, Q~), Q~ from the reflectors stored below the subdiagonal (LAPACK's dormtr, uplo = L)
        ormqr_left(refl[1:, :-1], tau, P[1:], lwork=max(1, 64 * k))
    return lam, np.array(P, order="C")  # a copy: for k = 1 a contiguous view may keep P's negative stride


blas_pools()  # loads the LAPACK table too
