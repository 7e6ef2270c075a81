"""Flags that say when a number should not be believed (reported in metrics.json, never hidden)."""

from __future__ import annotations

import math

import numpy as np

from gradrank.core import records as R
from gradrank.core.floors import resolution

QUADRATURE_TOL = 1e-6
"""The largest change of mu between the last two quadrature rules that counts as converged."""


def identity_tol(acfg, dtype: str) -> float:
    """The identity check's tolerance: analysis.identity_tol, at least 1e-4 below float64."""
    return acfg.identity_tol if dtype == "float64" else max(acfg.identity_tol, 1e-4)


def spectrum_tol(dtype: str) -> float:
    """The largest relative residual of G's top triplets that is believed."""
    return 1e-3 if dtype == "float64" else 1e-2


def trust(
    acfg,
    dtype: str,
    norms: R.Norms,
    singular_values: list[float],
    identity_error: float,
    spectral_residual: float,
    mu_err: float,
    notes: list[str] = (),
    no_signal: str | None = None,
) -> R.Trust:
    """The checks of an analysis with their warnings (acfg: the analysis section, dtype: compute.dtype);
    notes: warnings about the input that fail no check; no_signal: why G is at rounding level (signal)."""
    tol = identity_tol(acfg, dtype)
    finite = all(math.isfinite(v) for v in norms.to_dict().values()) and all(math.isfinite(v) for v in singular_values)
    spec_tol = spectrum_tol(dtype)
    floor = singular_values[0] * resolution(dtype)
    checks = R.Checks(
        finite=finite,
        identity=identity_error <= tol,
        quadrature=mu_err <= QUADRATURE_TOL,
        spectrum=spectral_residual <= spec_tol,
        resolution=bool((1 + acfg.edge_margin) * norms.E >= floor or norms.E == 0),
        signal=no_signal is None,
    )
    warnings = [] if no_signal is None else [no_signal]
    if not finite:
        warnings.append("non-finite values in the gradient or its spectrum")
    if not checks.identity:
        warnings.append(f"decomposition identity error {identity_error:.2e} exceeds {tol:.0e}")
    if not checks.quadrature:
        warnings.append(f"Gauss-Hermite quadrature for mu not converged (change {mu_err:.1e}); raise analysis.quadrature")
    if not checks.spectrum:
        warnings.append(
            f"top singular triplets not converged (residual {spectral_residual:.1e} > {spec_tol:.0e}): "
            "singular values, outlier count and regime are unreliable"
        )
    if not checks.resolution:
        warnings.append(
            f"||E|| = {norms.E:.2e} is below the {dtype} resolution s_1 sqrt(eps) = "
            f"{floor:.2e} of G's spectrum: outliers between them cannot be counted"
        )
    return R.Trust(ok=all(checks.to_dict().values()), checks=checks, warnings=warnings, notes=list(notes))


def signal(dtype: str, singular_values: list[float], n: int, bound: float, rounding: str | None = None) -> str | None:
    """Why G is at rounding level, or None when it is not. `bound` = coef ||X||_F ||D||_F >= ||G_loss||_F:
    a gradient within n eps of it (cancellation), zero, near underflow, or data that centring reduced
    to rounding error (`rounding`, from the data) is noise, not structure."""

    fi = np.finfo(dtype)
    s1 = float(singular_values[0]) if len(singular_values) else 0.0
    if rounding:
        return rounding
    if not s1 > 0:
        return "the gradient's spectrum is zero (zero weights or residues, or underflow): there is no structure to classify"
    if s1 < fi.tiny / fi.eps:
        return f"||G|| = {s1:.1e} is within rounding of {dtype}'s underflow: spectrum and regime are noise"
    if s1 <= n * fi.eps * bound:
        return f"||G|| = {s1:.1e} is at the rounding level of its sum ({n} eps x {bound:.1e}): spectrum and regime are noise"
    return None
