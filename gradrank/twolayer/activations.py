"""Activations with their first and second derivatives (sigma'' feeds the Jacobian penalty)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Activation:
    name: str
    f: Fn
    d1: Fn
    d2: Fn


def _phi(u):  # standard normal density
    return _INV_SQRT_2PI * torch.exp(-0.5 * u * u)


def _Phi(u):  # standard normal cdf
    return 0.5 * (1.0 + torch.erf(u / _SQRT2))


def _sig(u):
    return torch.sigmoid(u)


def get(name: str, leaky_slope: float = 0.01) -> Activation:
    """sigma, sigma', sigma'' for a named activation (derivative at a kink: the right-hand 0 side)."""
    s = leaky_slope
    table: dict[str, tuple[Fn, Fn, Fn]] = {
        "relu": (torch.relu, lambda u: (u > 0).to(u.dtype), torch.zeros_like),
        "leaky_relu": (
            lambda u: torch.where(u > 0, u, s * u),
            lambda u: torch.where(u > 0, torch.ones_like(u), torch.full_like(u, s)),
            torch.zeros_like,
        ),
        "tanh": (torch.tanh, lambda u: 1 - torch.tanh(u) ** 2, lambda u: -2 * torch.tanh(u) * (1 - torch.tanh(u) ** 2)),
        "sigmoid": (_sig, lambda u: _sig(u) * (1 - _sig(u)), lambda u: _sig(u) * (1 - _sig(u)) * (1 - 2 * _sig(u))),
        "gelu": (lambda u: u * _Phi(u), lambda u: _Phi(u) + u * _phi(u), lambda u: _phi(u) * (2 - u * u)),
        "erf": (
            torch.erf,
            lambda u: _TWO_OVER_SQRT_PI * torch.exp(-u * u),
            lambda u: -2 * u * _TWO_OVER_SQRT_PI * torch.exp(-u * u),
        ),
        "softplus": (torch.nn.functional.softplus, _sig, lambda u: _sig(u) * (1 - _sig(u))),
        "quadratic": (lambda u: u * u, lambda u: 2 * u, lambda u: torch.full_like(u, 2.0)),
        "linear": (lambda u: u, torch.ones_like, torch.zeros_like),
    }
    if name not in table:
        from gradrank.errors import InputError

        raise InputError(f"unknown activation '{name}'; choose from {', '.join(table)}")
    return Activation(name, *table[name])
