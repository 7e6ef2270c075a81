"""Layer numbers that sum over every singular value or every rank: a multi-output layer's shares are
Frobenius shares (docs/deep.md, section 3), and float32 layers' effective and energy ranks come from
values accurate enough for a sum over the whole spectrum."""

from __future__ import annotations

import pytest
import torch

import gradrank
from gradrank import config
from gradrank.models import capture as capture_mod
from gradrank.models.registry import Problem, linear_layers
from gradrank.studies import layers as layers_mod


def _classifier(dtype=torch.float64, n=30, seed=5):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(70, 60), torch.nn.Tanh(), torch.nn.Linear(60, 50), torch.nn.Tanh(), torch.nn.Linear(50, 3)
    ).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g, dtype=torch.float64) / p.shape[-1] ** 0.5
    x, y = torch.randn(n, 70, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    return Problem("classifier", model.to(dtype), [(x.to(dtype), y)], torch.nn.functional.cross_entropy)


def test_a_three_class_heads_s1_share_is_its_frobenius_norm_squared_over_gs():
    """S1 of a C = 3 output layer has rank up to C - 1 = 2: its share is ||S1||_F^2 / ||G||_F^2 of the
    dense product (not ||S1||_op^2, which is smaller), S12's and S2's (rank one) likewise, E's too."""
    problem = _classifier()
    cap = capture_mod.capture(problem, linear_layers(problem.model))
    res = layers_mod.analyze_capture(cap, config.load(), problem)
    low = 0
    for r in res.layers:
        f = cap.layers[r.name]
        factors, spike, _ = layers_mod.decompose_layer(f, problem.spike)
        out = gradrank.core.engine.run(factors, spike, config.load().analysis)
        G = f.gradient()
        fro2 = float(G.norm()) ** 2
        S1 = out.dec.S1.dense()
        assert torch.linalg.matrix_rank(S1) >= 2, r.name  # the case that matters: more than one singular value
        dense = {
            "S1": float(S1.norm()) ** 2 / fro2,
            "S12": float(out.dec.S12.dense().norm()) ** 2 / fro2,
            "S2": float(out.dec.S2.dense().norm()) ** 2 / fro2,
            "E": float(out.dec.E_dense(spike.H_B).norm()) ** 2 / fro2,
        }
        for k, v in dense.items():
            assert r.shares[k] == pytest.approx(v, rel=1e-10, abs=1e-15), (r.name, k)
        op = float(torch.linalg.matrix_norm(S1, 2)) ** 2 / fro2
        low += op < 0.99 * dense["S1"]
        assert r.norms["S1"] == pytest.approx(op**0.5 * fro2**0.5, rel=1e-10)  # norms.S1 stays the operator norm
    assert low  # the operator norm's share would be wrong somewhere
