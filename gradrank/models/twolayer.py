"""The two-layer network f(x) = gamma_m * a^T sigma(W x) with fixed outer weights (docs/model.md, the network).

Two views of one network: `Network`, its weights as plain tensors for the closed-form gradient
(Prop. 2.1 of arXiv 2510.01303; it lives in gradrank.models.closed_form, with `output`, so that
the closed form imports nothing from here), and `TwoLayer`, the nn.Module that torch.optim trains
and autograd differentiates, registered as the SPEC `twolayer` (`problem`). Both compute f through `output`, the one forward pass.
"""

from __future__ import annotations

import math

import torch

from gradrank.config import Config, ModelConfig
from gradrank.core.activations import Activation, get
from gradrank.data import spiked as data_mod
from gradrank.data.spiked import Dataset
from gradrank.errors import InputError
from gradrank.models import closed_form
from gradrank.models.closed_form import Network, output
from gradrank.models.registry import DataSpike, Problem, device
from gradrank.rng import generator


class TwoLayer(torch.nn.Module):
    """f(x) = gamma_m a^T sigma(W x) as a module: W = inner.weight (m x d, a bias-free nn.Linear, so
    that layer capture sees it), a (m) a parameter trained only when train_outer."""

    def __init__(self, W: torch.Tensor, a: torch.Tensor, gamma: float, act: Activation, train_outer: bool = False):
        super().__init__()
        m, d = W.shape
        self.inner = torch.nn.Linear(d, m, bias=False, dtype=W.dtype, device=W.device)
        with torch.no_grad():
            self.inner.weight.copy_(W)
        self.a = torch.nn.Parameter(a.clone(), requires_grad=train_outer)
        self.gamma, self.act = gamma, act

    @classmethod
    def of(cls, net: Network, train_outer: bool = False) -> "TwoLayer":
        """The module holding a copy of net's weights."""
        return cls(net.W, net.a, net.gamma, net.act, train_outer)

    @property
    def W(self) -> torch.nn.Parameter:
        return self.inner.weight

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return output(self.inner(X), self.a, self.gamma, self.act)  # n

    def network(self) -> Network:
        """The closed-form view of the current weights (sharing their storage, outside autograd)."""
        return Network(self.W.detach(), self.a.detach(), self.gamma, self.act)

    def factors(self, X: torch.Tensor, y: torch.Tensor, loss_kind: str):
        """The closed-form factors of G = dL/dW^T at (X, y) (Prop. 2.1): gradrank.models.closed_form.gradient."""
        return closed_form.gradient(self.network(), X, y, loss_kind)


def problem_of(ds: Dataset, net: Network, loss_kind: str) -> Problem:
    """The SPEC's Problem for a data set and a network: one full batch, the mean loss, the spike of X."""
    kind = loss_kind

    def loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return closed_form.loss_and_residue(kind, f, y)[0].mean()

    spike = DataSpike("inner", ds.q, ds.z, float(ds.zeta)) if ds.zeta else None
    return Problem("twolayer", TwoLayer.of(net), [(ds.X, ds.y)], loss, None, "", spike)


def problem(cfg: Config) -> Problem:
    """The SPEC `twolayer`: the paper's network at its initialisation on the config's data, in compute.dtype."""
    if cfg.model.weights:
        raise InputError("config key 'model.weights': the SPEC twolayer starts from its initialisation (unset model.weights)")
    dtype, dev = getattr(torch, cfg.compute.dtype), device(cfg.compute)
    ds = data_mod.load(cfg.data, cfg.seed, cfg.loss.kind)
    return problem_of(ds.to(dev, dtype), init(cfg.model, cfg.seed, ds).to(dev, dtype), cfg.loss.kind)


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
