"""Regularisers R(W) and their gradients lambda * grad_{W^T} R (spec section 6), as d x m matrices."""

from __future__ import annotations

import torch

from gradrank.config import Config
from gradrank.network import Network


def weight_decay(net: Network, lam: float) -> torch.Tensor:
    """R = 1/2 ||W||_F^2, so lambda grad_{W^T} R = lambda W^T."""
    return lam * net.W.T


def penalty_gradient(cfg: Config, net: Network, X: torch.Tensor) -> torch.Tensor | None:
    """The sum of the active regularisers' gradients (None when all are off)."""
    rc = cfg.regularizer
    total = None
    if rc.weight_decay:
        total = weight_decay(net, rc.weight_decay)
    return total


def penalty_value(cfg: Config, net: Network, X: torch.Tensor) -> float:
    rc = cfg.regularizer
    value = 0.0
    if rc.weight_decay:
        value += 0.5 * rc.weight_decay * float(net.W.pow(2).sum())
    return value
