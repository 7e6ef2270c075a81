"""Named numerical floors: the one place each guard against dividing by zero or trusting rounding lives."""

from __future__ import annotations

import numpy as np

NORM_FLOOR = 1e-300
"""Denominator floor for a norm that may be exactly zero (a ratio of zeros reads 0, not NaN); far
below any norm a float64 computation of this package resolves, so it never changes a nonzero ratio."""

SCALE_SAFE = (1e-100, 1e100)
"""Magnitudes between which squaring a scale (a Gram matrix) can neither overflow nor underflow in float64."""


def eps(dtype) -> float:
    """Machine epsilon of a torch or numpy float dtype (or its name)."""

    name = str(dtype).removeprefix("torch.")
    return float(np.finfo(name).eps)


def resolution(dtype) -> float:
    """sqrt(eps): the relative resolution s_i / s_1 of singular values from a Gram matrix, whose
    eigenvalues carry an absolute error ~ eps s_1^2 (docs/model.md, spectra)."""
    return eps(dtype) ** 0.5


def tiny(dtype) -> float:
    """The smallest normal number of the dtype: the floor of a singular value one divides by."""

    return float(np.finfo(str(dtype).removeprefix("torch.")).tiny)
