"""The centre mu of the paper's network (arXiv 2510.01303; docs/model.md §3): population mu by quadrature
under the Gaussian model, or the empirical mean over the samples; and the four-term split of
this network's gradient with it."""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg
import torch

from gradrank.core.split import Decomposition, split
from gradrank.data.spiked import Dataset
from gradrank.models.closed_form import Gradient
from gradrank.models.twolayer import Network

HERMITE_MAX = 360  # the finest Gauss-Hermite rule tried; past it the panel rule takes over


@functools.lru_cache(maxsize=None)  # every run reuses a rule
def _hermite_rule(k: int):
    """Nodes g and weights for E f(g), g ~ N(0, 1), from k-point Gauss-Hermite (Golub-Welsch).

    The nodes are the eigenvalues of the Jacobi matrix of the orthonormal Hermite polynomials p_j
    of N(0, 1) (zero diagonal, off-diagonal sqrt(1), ..., sqrt(k-1)), then one Newton step on p_k;
    the weights are 1 / (k p_{k-1}(g)^2) (Christoffel-Darboux), computed in logs and normalised to 1."""
    g = scipy.linalg.eigvalsh_tridiagonal(np.zeros(k), np.sqrt(np.arange(1.0, k)), lapack_driver="sterf")  # O(k^2), no BLAS
    p_prev, p_last, _ = _orthonormal_hermite(g, k)
    g = g - p_last / (math.sqrt(k) * p_prev)  # p_k' = sqrt(k) p_{k-1}
    g = (g - g[::-1]) / 2  # the rule is symmetric
    p_prev, _, log_scale = _orthonormal_hermite(g, k)
    log_w = -2.0 * (np.log(np.abs(p_prev)) + log_scale)
    w = np.exp(log_w - log_w.max())
    w = (w + w[::-1]) / 2
    return g, w / w.sum()


def _orthonormal_hermite(g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_{k-1}(g), p_k(g)) / c and log c, by p_{j+1} = (g p_j - sqrt(j) p_{j-1}) / sqrt(j+1),
    p_0 = 1, rescaled every 16 steps (p_{k-1} overflows from ~360 points)."""
    prev, cur, log_scale = np.zeros_like(g), np.ones_like(g), np.zeros_like(g)
    for j in range(k):
        prev, cur = cur, (g * cur - math.sqrt(j) * prev) / math.sqrt(j + 1)
        if j % 16 == 15:
            c = np.maximum(np.abs(prev), np.abs(cur))
            prev, cur, log_scale = prev / c, cur / c, log_scale + np.log(c)
    return prev, cur, log_scale


@functools.lru_cache(maxsize=None)
def _panel_rule(per_panel: int, panels: int = 120, lo: float = 1e-12, hi: float = 9.0):
    """Nodes g > 0 and weights for E f(g) over one half-line: composite Gauss-Legendre on
    geometric panels, so sigma'(s g) is resolved at every scale 1/s from 1e-12 to 9."""
    edges = np.concatenate([[0.0], np.geomspace(lo, hi, panels)])
    x, w = np.polynomial.legendre.leggauss(per_panel)
    a, b = edges[:-1, None], edges[1:, None]
    g = ((b - a) / 2 * x + (a + b) / 2).ravel()
    wg = ((b - a) / 2 * w).ravel() * np.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)
    return g, wg


def mu_population(ds: Dataset, net: Network, points: int, tol: float = 1e-12) -> tuple[torch.Tensor, float]:
    """mu_j = E_g[sigma'(s_j g)], s_j^2 = w_j^T Sigma_hat w_j + zeta^2 (w_j^T q)^2.

    Gauss-Hermite with `points`, then 2x and 4x points (up to HERMITE_MAX); when that has not
    converged (sigma' varies on a scale 1/s_j much finer than the Hermite nodes, e.g. tanh with a strong spike)
    a composite Gauss-Legendre rule on geometric panels, split at the kink g = 0, is used.
    Returns mu and an error estimate (the change between the last two rules)."""
    s = (ds.bulk_quadratic(net.W) + (ds.zeta * (net.W @ ds.q)) ** 2).clamp_min(0).sqrt()  # no Python-float overflow
    tensor = lambda a: torch.as_tensor(a, dtype=net.W.dtype, device=net.W.device)  # noqa: E731

    def hermite(k):
        g, w = map(tensor, _hermite_rule(k))
        return net.act.d1(s[:, None] * g[None, :]) @ w

    def panels(k):
        g, w = map(tensor, _panel_rule(k))
        u = s[:, None] * g[None, :]
        return (net.act.d1(u) + net.act.d1(-u)) @ w

    mu = hermite(points)
    finer_hermite = [k for k in (2 * points, 4 * points) if k <= HERMITE_MAX]
    for rule, orders in ((hermite, finer_hermite), (panels, (12, 16))):
        change = math.inf
        for k in orders:
            finer = rule(k)
            change = float((finer - mu).abs().max())
            mu = finer
        if change <= tol:
            break
    return mu, change


def decompose(grad: Gradient, ds: Dataset, net: Network, mu: torch.Tensor, mu_error: float = 0.0) -> Decomposition:
    """G_loss = S1 + S12 + S2 + E for the paper's network: J = a o sigma'(X W^T)."""
    return split(grad.coef, ds.X_B, ds.zeta, ds.z, ds.q, grad.r, net.a, grad.Sp, mu, mu_error)


def compute_mu(kind: str, grad: Gradient, ds: Dataset, net: Network, points: int) -> tuple[torch.Tensor, float]:
    """Population mu by quadrature (spiked data) or the empirical mean over the n samples."""
    if kind == "population":
        return mu_population(ds, net, points)
    return grad.Sp.mean(0), 0.0
