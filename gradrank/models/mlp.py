"""The built-in deep MLP on the spiked data (docs/deep.md):

    f(x) = gamma_m * a^T sigma(W_{L-1} ... sigma(W_1 x)),   L = model.depth linear layers,

W_1 drawn exactly as the paper's first layer (rows uniform on the sphere, planted part included),
hidden layers 2..L-1 with rows uniform on the sphere of radius model.gain, the readout a in {+-1}
(nn.Linear(m, 1) holding a), gamma_m = c/sqrt(m) (NTK) or c/m (mean field) for the last width m.
With depth 2 it is the paper's network, to rounding.
"""

from __future__ import annotations

import torch

from gradrank.config import Config
from gradrank.core.activations import Activation, get
from gradrank.data import spiked as data_mod
from gradrank.errors import InputError
from gradrank.models import twolayer as network
from gradrank.models.closed_form import loss_and_residue
from gradrank.models.registry import DataSpike, Problem, device
from gradrank.rng import generator


class DeepMLP(torch.nn.Module):
    """Bias-free linear layers `layers.0` .. `layers.{L-2}` with sigma between, then `readout`, times gamma."""

    def __init__(self, weights: list[torch.Tensor], a: torch.Tensor, gamma: float, act: Activation):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for W in weights:
            lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=W.dtype)
            lin.weight.data.copy_(W)
            self.layers.append(lin)
        self.readout = torch.nn.Linear(a.numel(), 1, bias=False, dtype=a.dtype)
        self.readout.weight.data.copy_(a[None])
        self.gamma, self.act = gamma, act

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        h = X
        for lin in self.layers:
            h = self.act.f(lin(h))
        return self.gamma * self.readout(h)[:, 0]


def widths(cfg: Config) -> list[int]:
    """The depth - 1 hidden widths."""
    mc = cfg.model
    if not mc.hidden:
        return [mc.width] * (mc.depth - 1)
    if len(mc.hidden) != mc.depth - 1:
        raise InputError(f"config key 'model.hidden' must list model.depth - 1 = {mc.depth - 1} widths, got {len(mc.hidden)}")
    return list(mc.hidden)


def build(cfg: Config, ds) -> DeepMLP:
    """The network for the data set ds, in compute.dtype (drawn in float64 on the CPU)."""
    ms = widths(cfg)
    W1 = network.init(cfg.replace(**{"model.width": ms[0]}).model, cfg.seed, ds).W
    weights = [W1]
    for layer, (m_in, m_out) in enumerate(zip(ms[:-1], ms[1:]), start=2):
        W = torch.randn(m_out, m_in, generator=generator(cfg.seed, "hidden", layer), dtype=torch.float64)
        weights.append(cfg.model.gain * W / W.norm(dim=1, keepdim=True))
    a = network.outer_weights(cfg.model, cfg.seed, ms[-1])
    dtype = getattr(torch, cfg.compute.dtype)
    act = get(cfg.model.activation, cfg.model.leaky_slope)
    return DeepMLP([W.to(dtype) for W in weights], a.to(dtype), network.gamma_m(cfg.model, ms[-1]), act)


def problem(cfg: Config) -> Problem:
    """The deep MLP, its data in batches of layers.batch_size (0: one batch) and the config's loss."""
    ds = data_mod.load(cfg.data, cfg.seed, cfg.loss.kind)
    dtype, dev = getattr(torch, cfg.compute.dtype), device(cfg.compute)
    model = build(cfg, ds).to(dev)
    X, y = ds.X.to(dev, dtype), ds.y.to(dev, dtype)
    step = cfg.layers.batch_size or ds.n
    batches = [(X[i : i + step], y[i : i + step]) for i in range(0, ds.n, step)]
    kind = cfg.loss.kind

    def loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_and_residue(kind, f, y)[0].mean()

    spike = DataSpike("layers.0", ds.q.to(dev, dtype), ds.z.to(dev, dtype), float(ds.zeta)) if ds.zeta else None
    return Problem("mlp", model, batches, loss, None, "", spike)
