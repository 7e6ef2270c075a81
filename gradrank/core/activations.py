"""The one activation registry: sigma with its first three derivatives (sigma'' feeds the Jacobian
penalty, sigma''' the noise surrogate's Laplacian) and the traits the theory's exponents need.

Importing this module does not import torch (`gradrank theory` reads only the traits); `get`
builds the functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from gradrank.errors import InputError

Fn = Callable[..., "torch.Tensor"]  # noqa: F821 - torch is imported where the functions are built
_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class Traits:
    """What docs/theory.md's exponents need of sigma, for a bulk pre-activation s g (g ~ N(0, 1), s -> 0):
    mu_zero: E sigma'(s g) = 0 (so mu = 0, S1 = S12 = 0); p: sd(sigma'_perp) ~ s^p (None: sigma' constant,
    sigma'_perp = 0); d2_mean: E sigma''(s g) != 0; f_mean: E sigma(s g) != 0."""

    mu_zero: bool
    p: int | None
    d2_mean: bool
    f_mean: bool


TRAITS = {
    "relu": Traits(False, 0, True, True),
    "leaky_relu": Traits(False, 0, True, True),
    "tanh": Traits(False, 2, False, False),
    "sigmoid": Traits(False, 2, False, True),
    "gelu": Traits(False, 1, True, True),
    "erf": Traits(False, 2, False, False),
    "softplus": Traits(False, 1, True, True),
    "quadratic": Traits(True, 1, True, True),
    "linear": Traits(False, None, False, False),
}


@dataclass(frozen=True)
class Activation:
    name: str
    f: Fn
    d1: Fn
    d2: Fn
    d3: Fn
    traits: Traits


def traits(name: str) -> Traits:
    """The theory traits of a named activation."""
    if name not in TRAITS:
        raise InputError(f"unknown activation '{name}'; choose from {', '.join(TRAITS)}")
    return TRAITS[name]


def get(name: str, leaky_slope: float = 0.01) -> Activation:
    """sigma, sigma', sigma'', sigma''' for a named activation (derivative at a kink: the right-hand 0 side)."""
    import torch

    kind = traits(name)  # an unknown name is an InputError

    def phi(u):  # standard normal density
        return _INV_SQRT_2PI * torch.exp(-0.5 * u * u)

    def Phi(u):  # standard normal cdf
        return 0.5 * (1.0 + torch.erf(u / _SQRT2))

    sig = torch.sigmoid
    zero = torch.zeros_like
    s = leaky_slope

    def tanh_d3(u):
        t = torch.tanh(u)
        return (1 - t * t) * (6 * t * t - 2)

    def sigmoid_d3(u):
        v = sig(u)
        return v * (1 - v) * (1 - 6 * v + 6 * v * v)

    def softplus_d3(u):
        v = sig(u)
        return v * (1 - v) * (1 - 2 * v)

    table: dict[str, tuple[Fn, Fn, Fn, Fn]] = {
        "relu": (torch.relu, lambda u: (u > 0).to(u.dtype), zero, zero),
        "leaky_relu": (
            lambda u: torch.where(u > 0, u, s * u),
            lambda u: torch.where(u > 0, torch.ones_like(u), torch.full_like(u, s)),
            zero,
            zero,
        ),
        "tanh": (
            torch.tanh,
            lambda u: 1 - torch.tanh(u) ** 2,
            lambda u: -2 * torch.tanh(u) * (1 - torch.tanh(u) ** 2),
            tanh_d3,
        ),
        "sigmoid": (sig, lambda u: sig(u) * (1 - sig(u)), lambda u: sig(u) * (1 - sig(u)) * (1 - 2 * sig(u)), sigmoid_d3),
        "gelu": (
            lambda u: u * Phi(u),
            lambda u: Phi(u) + u * phi(u),
            lambda u: phi(u) * (2 - u * u),
            lambda u: torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi) * (u**3 - 4 * u),
        ),
        "erf": (
            torch.erf,
            lambda u: _TWO_OVER_SQRT_PI * torch.exp(-u * u),
            lambda u: -2 * u * _TWO_OVER_SQRT_PI * torch.exp(-u * u),
            lambda u: 2 / _SQRT_PI * torch.exp(-u * u) * (4 * u * u - 2),
        ),
        "softplus": (torch.nn.functional.softplus, sig, lambda u: sig(u) * (1 - sig(u)), softplus_d3),
        "quadratic": (lambda u: u * u, lambda u: 2 * u, lambda u: torch.full_like(u, 2.0), zero),
        "linear": (lambda u: u, torch.ones_like, zero, zero),
    }
    return Activation(name, *table[name], kind)
