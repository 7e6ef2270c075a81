"""Regularisers (docs/training.md): values and closed-form gradients lambda * grad_{W^T} R as
d x m matrices, and input noise as a change of the data the loss gradient is taken at.

- weight decay     R = 1/2 ||W||_F^2                       -> lambda W^T
- Jacobian penalty R = (1/n) sum_i ||grad_x f(x_i)||^2     -> closed form with sigma''
- input noise      single / average: the loss at X + tau N (`noisy_data`, the noise joins the bulk);
                   surrogate: the small-tau expansion of E_N loss(X + tau N) (Bishop 1995),
                   P = (tau^2 / 2n) sum_i [l''(f_i) ||grad_x f(x_i)||^2 + l'(f_i) Laplacian_x f(x_i)].
Notation: Z = X W^T (n x m), B = a o sigma'(Z) (rows b_i), so grad_x f(x_i) = gamma W^T b_i.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from gradrank.config import RegularizerConfig
from gradrank.data.spiked import Dataset
from gradrank.models.closed_form import loss_and_residue
from gradrank.models.twolayer import Network
from gradrank.rng import generator


def _loss_d2_d3(kind: str, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """l''(f) and l'''(f): 1, 0 for MSE; p(1-p), p(1-p)(1-2p) with p = sigmoid(f) for logistic (y^2 = 1)."""
    if kind == "mse":
        return torch.ones_like(f), torch.zeros_like(f)
    p = torch.sigmoid(f)
    return p * (1 - p), p * (1 - p) * (1 - 2 * p)


def weight_decay(net: Network, lam: float) -> torch.Tensor:
    """R = 1/2 ||W||_F^2, so lambda grad_{W^T} R = lambda W^T."""
    return lam * net.W.T


def _input_grad_sq(net: Network, X: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """J_i = ||grad_x f(x_i)||^2 and grad_{W^T} sum_i h_i J_i (h held fixed).

    With Gm = B W (rows W^T b_i) and C = (h o Gm W^T) o (a o sigma''(Z)):
    d/dW^T sum_i h_i gamma^2 ||W^T b_i||^2 = 2 gamma^2 [Gm^T diag(h) B + X^T C]."""
    Z = net.preactivations(X)
    B = net.a * net.act.d1(Z)
    Gm = B @ net.W
    J = net.gamma**2 * Gm.pow(2).sum(1)
    C = (h[:, None] * (Gm @ net.W.T)) * (net.a * net.act.d2(Z))
    grad = 2 * net.gamma**2 * ((h[:, None] * Gm).T @ B + X.T @ C)
    return J, grad


def jacobian_value(net: Network, X: torch.Tensor) -> float:
    """R = (1/n) sum_i ||grad_x f(x_i)||^2."""
    return float(net.gamma**2 * (net.a * net.act.d1(net.preactivations(X)) @ net.W).pow(2).sum(1).mean())


def jacobian_gradient(net: Network, X: torch.Tensor) -> torch.Tensor:
    """grad_{W^T} of (1/n) sum_i ||grad_x f(x_i)||^2 in closed form (uses sigma'')."""
    h = torch.full((X.shape[0],), 1.0 / X.shape[0], dtype=X.dtype, device=X.device)
    return _input_grad_sq(net, X, h)[1]


def _laplacian(net: Network, Z: torch.Tensor) -> torch.Tensor:
    """Laplacian_x f(x_i) = gamma sum_j a_j sigma''(z_ij) ||w_j||^2."""
    return net.gamma * (net.act.d2(Z) @ (net.a * net.W.pow(2).sum(1)))


def surrogate_value(net: Network, X: torch.Tensor, y: torch.Tensor, kind: str, tau: float) -> float:
    Z = net.preactivations(X)
    f = net.output(Z)
    _, r = loss_and_residue(kind, f, y)
    h, _ = _loss_d2_d3(kind, f)
    J = net.gamma**2 * (net.a * net.act.d1(Z) @ net.W).pow(2).sum(1)
    return float(0.5 * tau**2 * (h * J + r * _laplacian(net, Z)).mean())


def surrogate_gradient(net: Network, X: torch.Tensor, y: torch.Tensor, kind: str, tau: float) -> torch.Tensor:
    """grad_{W^T} of the small-noise surrogate P (module docstring), all dependences on W included:

    dP = (tau^2/2n) sum_i [(l''' J_i + l'' Lap_i) df_i + l'' dJ_i + l' dLap_i], where
    sum_i c_i df_i -> gamma X^T ((c a^T) o sigma'(Z)) (the loss gradient with residue c) and
    sum_i r_i dLap_i -> gamma [X^T ((r (a o |w|^2)^T) o sigma'''(Z)) + 2 W^T diag(a o sigma''(Z)^T r)]."""

    n = X.shape[0]
    Z = net.preactivations(X)
    f = net.output(Z)
    _, r = loss_and_residue(kind, f, y)
    h, t = _loss_d2_d3(kind, f)
    J, grad_J = _input_grad_sq(net, X, h)
    lap = _laplacian(net, Z)
    c = t * J + h * lap
    g_f = net.gamma * (X.T @ (c[:, None] * net.a * net.act.d1(Z)))
    w2 = net.W.pow(2).sum(1)
    g_lap = net.gamma * (X.T @ (r[:, None] * (net.a * w2) * net.act.d3(Z)) + 2 * net.W.T * (net.a * (net.act.d2(Z).T @ r)))
    return (0.5 * tau**2 / n) * (g_f + grad_J + g_lap)


def noise(seed: int, draw: int, shape: tuple[int, int]) -> torch.Tensor:
    """Standard Gaussian input noise N for draw number `draw` (CPU float64, reproducible)."""
    return torch.randn(*shape, generator=generator(seed, "input_noise", draw), dtype=torch.float64)


def noisy_data(rc: RegularizerConfig, seed: int, ds: Dataset, draw: int = 0) -> Dataset:
    """The data the loss gradient is taken at: X + tau N, with the noise joining the bulk (X_B + tau N).

    noise_mode = single: one draw. average: the K = noise_draws draws stacked into one nK-row sample,
    whose gradient (gamma/(nK)) X_K^T D_K is exactly the mean of the K per-draw gradients; every
    decomposition term is then the mean of the K per-draw terms, still rank one (the stacked factor
    vectors are summed, with one mu for all draws), so the identity stays exact. The population
    covariance of the bulk becomes Sigma_hat + tau^2 I. Without input noise, or for the surrogate
    (a dense penalty), the data are returned unchanged."""
    tau = rc.input_noise
    if not tau or rc.noise_mode == "surrogate":
        return ds
    K = rc.noise_draws if rc.noise_mode == "average" else 1
    N = tau * noise(seed, draw, (K * ds.n, ds.d)).to(ds.X)
    return replace(
        ds,
        X=ds.X.repeat(K, 1) + N,
        y=ds.y.repeat(K),
        X_B=ds.X_B.repeat(K, 1) + N,
        z=ds.z.repeat(K),
        eigenvalues=ds.eigenvalues + tau**2 if ds.population else ds.eigenvalues,
        info={**ds.info, "noise_draws": K, "noise_draw": draw},
    )


def penalty_gradient(
    rc: RegularizerConfig, net: Network, X: torch.Tensor, y: torch.Tensor, loss_kind: str
) -> torch.Tensor | None:
    """The sum of the dense regularisers' gradients at the clean data (None when all are off)."""
    parts = []
    if rc.weight_decay:
        parts.append(weight_decay(net, rc.weight_decay))
    if rc.jacobian:
        parts.append(rc.jacobian * jacobian_gradient(net, X))
    if rc.input_noise and rc.noise_mode == "surrogate":
        parts.append(surrogate_gradient(net, X, y, loss_kind, rc.input_noise))
    return sum(parts[1:], parts[0]) if parts else None


def penalty_value(rc: RegularizerConfig, net: Network, X: torch.Tensor, y: torch.Tensor, loss_kind: str) -> float:
    """lambda R(W) summed over the dense regularisers (the value whose gradient penalty_gradient is)."""
    value = 0.0
    if rc.weight_decay:
        value += 0.5 * rc.weight_decay * float(net.W.pow(2).sum())
    if rc.jacobian:
        value += rc.jacobian * jacobian_value(net, X)
    if rc.input_noise and rc.noise_mode == "surrogate":
        value += surrogate_value(net, X, y, loss_kind, rc.input_noise)
    return value
