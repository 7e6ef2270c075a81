"""The two-layer network f(x) = gamma_m * a^T sigma(W x) with fixed outer weights (docs/model.md, the network)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradrank.config import ModelConfig
from gradrank.core.activations import Activation, get
from gradrank.data.spiked import Dataset
from gradrank.rng import generator


@dataclass
class Network:
    W: torch.Tensor  # m x d inner weights
    a: torch.Tensor  # m outer weights in {+-1}
    gamma: float  # c/sqrt(m) (NTK) or c/m (mean field)
    act: Activation

    @property
    def m(self) -> int:
        return self.W.shape[0]

    def preactivations(self, X: torch.Tensor) -> torch.Tensor:
        """Z = X W^T (n x m)."""
        return X @ self.W.T

    def output(self, Z: torch.Tensor) -> torch.Tensor:
        """f = gamma_m sigma(Z) a from the pre-activations: the one forward pass."""
        return self.gamma * (self.act.f(Z) @ self.a)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.output(self.preactivations(X))

    def to(self, device, dtype) -> "Network":
        return Network(self.W.to(device=device, dtype=dtype), self.a.to(device=device, dtype=dtype), self.gamma, self.act)


def gamma_m(mc: ModelConfig, m: int) -> float:
    """c/sqrt(m) (NTK) or c/m (mean field)."""
    return mc.c / (math.sqrt(m) if mc.scaling == "ntk" else m)


def init(mc: ModelConfig, seed: int, ds: Dataset) -> Network:
    """W = W_S (rows uniform on the sphere) + planted * n^(-1/4) v q^T, then normalised."""
    m, d, n = mc.width, ds.d, ds.n
    g = generator(seed, "weights")
    W = torch.randn(m, d, generator=g, dtype=torch.float64)
    W = W / W.norm(dim=1, keepdim=True)
    if mc.planted:
        v = torch.ones(m, dtype=torch.float64)
        if mc.planted_vector == "signs":
            v = torch.randint(0, 2, (m,), generator=g, dtype=torch.float64) * 2 - 1
        W = W + mc.planted * n ** (-0.25) * torch.outer(v, ds.q.double().cpu())
        if mc.planted_normalize == "rows":
            W = W / W.norm(dim=1, keepdim=True)
    return Network(W, outer_weights(mc, seed, m), gamma_m(mc, m), get(mc.activation, mc.leaky_slope))


def outer_weights(mc: ModelConfig, seed: int, m: int) -> torch.Tensor:
    """a in {+-1}^m: Rademacher, or balanced (half +1) in a random order."""
    g = generator(seed, "outer")
    if mc.outer == "balanced":
        a = torch.ones(m, dtype=torch.float64)
        a[m // 2 :] = -1
        return a[torch.randperm(m, generator=g)]
    return torch.randint(0, 2, (m,), generator=g, dtype=torch.float64) * 2 - 1
