"""The spike rule: the split H = H_B + zeta z q^T of a layer's input (or a data matrix) along its
principal direction (the paper's spiked model, arXiv 2510.01303, section 2; docs/model.md, section 2).

One rule for data files and every layer:
  centring   h = the mean of H's rows, H_c = H - 1 h^T; q is the top eigenvector of the centred
             Gram H_c^T H_c (the covariance's principal direction), zeta z = H_c q with
             ||z||^2 = n (z has mean zero and unit empirical variance), and H_B = H - zeta z q^T
             (the mean h stays in the bulk). Data files are centred when read (data.center, the
             default) and passed with center = False (H_c = H already); with data.center = false
             the user's X is taken as is (h = 0: the second moment's direction);
  sign       the entry of q of largest magnitude is positive (scikit-learn's svd_flip rule);
  exactness  q is the top eigenvector of the smaller Gram (d x d, or n x n when n < d), exact to
             rounding (core/spectra.py, data_spectrum: one Gram and its top eigenpair, the input
             scaled by a power of two where the Gram could over- or underflow); a d x d or n x n
             eigenproblem is cheap beside the layer analysis. torch.linalg.eigh (every eigenvector)
             costs 10-20x more at n = 750, d = 1250 (docs/performance.md).
A given q (a data file's own, a known data spike) uses the same centring: `along(H, q)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradrank.core.spectra import data_spectrum


@dataclass
class Spike:
    """H = H_B + zeta z q^T: q (d) unit, z (n) with ||z||^2 = n, zeta >= 0, H_B (n x d)."""

    q: torch.Tensor
    z: torch.Tensor
    zeta: float
    H_B: torch.Tensor


def principal_direction(H: torch.Tensor, center: bool = True) -> torch.Tensor:
    """The unit top eigenvector q of the centred Gram H_c^T H_c (H: n x d), sign-fixed (module docstring;
    center = False: of H^T H).

    From the smaller side: H_c^T H_c (d x d) when d <= n, else H_c H_c^T (n x n) with
    q = H_c^T u / ||H_c^T u|| (core/spectra.py, data_spectrum)."""
    Hc = H - H.mean(0) if center else H  # n x d
    v = data_spectrum(Hc, 1).V[:, 0]
    norm = float(v.norm())
    if norm == 0.0:  # H_c = 0: every direction is principal
        v = torch.zeros_like(v)
        v[0] = norm = 1.0
    return flip(v / norm)


def flip(q: torch.Tensor) -> torch.Tensor:
    """q with its largest-magnitude entry positive (the first such entry on ties)."""
    return -q if float(q[int(q.abs().argmax())]) < 0 else q


def along(H: torch.Tensor, q: torch.Tensor, center: bool = True) -> Spike:
    """The split of H (n x d) along the unit q: zeta z = H_c q, ||z||^2 = n, H_B = H - zeta z q^T
    (center = False: H_c = H)."""
    zz = H @ q - H.mean(0) @ q if center else H @ q  # zeta z = H_c q, H_c never formed
    zeta = float(zz.pow(2).mean().sqrt())
    z = zz / zeta if zeta > 0 else torch.zeros_like(zz)
    return Spike(q, z, zeta, H - torch.outer(zz, q))  # H - (zeta z) q^T


def principal(H: torch.Tensor, center: bool = True) -> Spike:
    """The split of H along its principal direction (the spike rule of the module docstring)."""
    return along(H, principal_direction(H, center), center)
