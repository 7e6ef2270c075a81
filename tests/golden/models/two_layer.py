"""A small deterministic two-layer network for the golden outputs of `gradrank layers --model`.

f(x) = a^T tanh(W x) / sqrt(m) on n = 96 inputs in d = 24 dimensions with a planted rank-one spike
(x_i = g_i + zeta z_i q), a tanh single-index target, the mean squared error; float64, every draw from
one local torch.Generator seeded by the config's seed (the contract of docs/deep.md, section 8:
`build(cfg)` returns model, inputs, targets, loss).
"""

import math

import torch

N, D, M = 96, 24, 40


class TwoLayer(torch.nn.Module):
    def __init__(self, g: torch.Generator):
        super().__init__()
        self.hidden = torch.nn.Linear(D, M, bias=False, dtype=torch.float64)
        self.readout = torch.nn.Linear(M, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            w = torch.randn(M, D, generator=g, dtype=torch.float64)
            self.hidden.weight.copy_(w / w.norm(dim=1, keepdim=True))
            signs = torch.randint(0, 2, (1, M), generator=g).to(torch.float64) * 2 - 1
            self.readout.weight.copy_(signs)

    def forward(self, x):
        return self.readout(torch.tanh(self.hidden(x))).squeeze(-1) / math.sqrt(M)


def build(cfg):
    g = torch.Generator().manual_seed(1000 + int(cfg.seed))
    q = torch.randn(D, generator=g, dtype=torch.float64)
    q = q / q.norm()
    z = torch.randn(N, generator=g, dtype=torch.float64)
    x = torch.randn(N, D, generator=g, dtype=torch.float64) / math.sqrt(D) + 1.5 * z[:, None] * q[None, :]
    beta = torch.randn(D, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ (beta / beta.norm()))
    model = TwoLayer(g)
    return {"model": model, "inputs": x, "targets": y, "loss": lambda out, t: ((out - t) ** 2).mean()}
