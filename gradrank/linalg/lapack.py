"""The LAPACK plumbing of the spectra (linalg.spectral holds the mathematics): scipy's LAPACK
routines called without the GIL, BLAS thread limits, and the tridiagonal eigensolver route.

sytrd and sterf come from scipy's Cython LAPACK table (scipy.linalg.cython_lapack, public API)
called through ctypes, which releases the GIL, so two reductions can run on two cores at once;
stemr and ormqr from scipy's _flapack; both loaded without scipy.linalg's package imports.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def scipy_linalg_module(name: str):
    """scipy.linalg's extension module `name` (cython_lapack, _flapack), loaded from its file without
    running scipy/linalg/__init__ (0.5 s of imports on the first analysis of a process); the plain
    import if that fails."""
    import glob
    import importlib
    import importlib.util
    import os

    try:
        root = os.path.dirname(importlib.util.find_spec("scipy").origin)
        spec = importlib.util.spec_from_file_location(f"scipy.linalg.{name}", glob.glob(f"{root}/linalg/{name}.*so")[0])
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    except Exception:  # noqa: BLE001 - any unusual layout: the ordinary import
        return importlib.import_module(f"scipy.linalg.{name}")


@functools.lru_cache(maxsize=1)
def blas_pools():
    """threadpoolctl's view of the loaded BLAS libraries (scipy's OpenBLAS among them), found once."""
    from threadpoolctl import ThreadpoolController

    scipy_linalg_module("cython_lapack")  # loads the library to be found
    return ThreadpoolController()


def one_blas_thread():
    """A context in which the BLAS libraries use one thread each (their helper threads would
    otherwise spin against torch's OpenMP pool, or wait on the core another reduction holds)."""
    return blas_pools().limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=None)
def routine(name: str):
    """A LAPACK routine (dsytrd, ssterf, ...) from scipy's Cython LAPACK table as a ctypes function."""
    import ctypes

    cython_lapack = scipy_linalg_module("cython_lapack")
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    capsule = cython_lapack.__pyx_capi__[name]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * {"sytrd": 10, "sterf": 4}[name[1:]])(address)


def tridiagonal(A):
    """A = Q T Q^T, in place when A is contiguous, for a symmetric float32/64 numpy array A (LAPACK
    sytrd, uplo = L of the Fortran view, whose memory is A's own), and all eigenvalues of T (sterf), ascending.
    Returns the reflectors (Fortran view of A), T's diagonal and off-diagonal, tau and the eigenvalues."""
    A = np.ascontiguousarray(A)  # LAPACK reads the memory: a strided view is copied first
    n, dt = A.shape[0], A.dtype
    x = "d" if dt == np.float64 else "s"
    ptr = lambda a: a.ctypes.data  # noqa: E731
    N, lwork, info = (np.array([v], np.int32) for v in (n, -1, 0))
    uplo = np.array([b"L"], "S1")
    d, e, tau, work = np.empty(n, dt), np.empty(max(n - 1, 1), dt), np.empty(max(n - 1, 1), dt), np.empty(1, dt)
    F = A.T  # Fortran-ordered view of the same memory (A is symmetric)
    args = lambda: (ptr(uplo), ptr(N), ptr(F), ptr(N), ptr(d), ptr(e), ptr(tau), ptr(work), ptr(lwork), ptr(info))  # noqa: E731
    routine(x + "sytrd")(*args())  # workspace query
    lwork[0] = int(work[0])
    work = np.empty(int(lwork[0]), dt)
    routine(x + "sytrd")(*args())
    if info[0]:
        raise RuntimeError(f"LAPACK {x}sytrd failed (info = {info[0]})")
    diag, off = d.copy(), e[: n - 1].copy()
    routine(x + "sterf")(ptr(N), ptr(d), ptr(e), ptr(info))
    if info[0]:
        raise RuntimeError(f"LAPACK {x}sterf did not converge (info = {info[0]})")
    return F, diag, off, tau[: n - 1], d


def eig_top(C: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """All eigenvalues (ascending) of the symmetric float32/64 array C and its top-k eigenvectors
    (descending order, n x k), from one tridiagonal reduction; C is overwritten."""
    flapack = scipy_linalg_module("_flapack")
    n = C.shape[0]
    with one_blas_thread():
        refl, diag, off, tau, lam = tridiagonal(C)  # C = Q T Q^T
        if k == 0:
            return lam, np.zeros((n, 0), C.dtype)
        # eigenvectors of T for the k largest eigenvalues (1-based indices n-k+1 .. n), then Q times them
        prefix = {np.dtype("float32"): "s", np.dtype("float64"): "d"}[diag.dtype]
        stemr, ormqr = getattr(flapack, prefix + "stemr"), getattr(flapack, prefix + "ormqr")
        found, _, Z, info = stemr(diag, np.append(off, 0.0), 2, 0.0, 0.0, n - k + 1, n)
        if info or found != k:  # MRRR declined (rare): a dense solver on the tridiagonal T instead
            import torch

            e = torch.from_numpy(off)
            T = torch.diag(torch.from_numpy(diag)) + torch.diag(e, 1) + torch.diag(e, -1)
            Z = torch.linalg.eigh(T)[1][:, n - k :].numpy()
        P = np.asfortranarray(Z[:, :k][:, ::-1])
        # Q = diag(1, Q~), Q~ from the reflectors stored below the subdiagonal (LAPACK's dormtr, uplo = L)
        P[1:] = ormqr("L", "N", refl[1:, :-1], tau, P[1:], lwork=max(1, 64 * k))[0]
    return lam, np.array(P, order="C")  # a copy: for k = 1 a contiguous view may keep P's negative stride
