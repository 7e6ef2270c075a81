"""Tests written for mutants the audit's tests let survive (docs/testing.md): each checks a real
behaviour of the module against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

# ---- tests for the survivors of the new modules' mutants (docs/testing.md)


def _deep_problem(batch=None):
    from gradrank import config
    from gradrank.models import registry as spec

    sets = ["data.n=60", "data.d=80", "model.width=100", "model.depth=4", "model.hidden=[100, 30, 100]"]
    cfg = config.load(sets=sets + ([f"layers.batch_size={batch}"] if batch else []))
    return cfg, spec.resolve("mlp", cfg)


def test_capture_loss_is_the_sample_weighted_mean_over_batches():
    """Capture.loss against the loss of the whole set computed batch by batch, weighted by batch size."""
    from gradrank.models import capture as capture_mod
    from gradrank.models import registry as spec

    cfg, problem = _deep_problem()
    sizes = [capture_mod.batch_size(x) for x, _ in problem.batches]
    with torch.no_grad():
        ref = sum(float(problem.loss(spec.forward(problem, x), t)) * n for (x, t), n in zip(problem.batches, sizes)) / sum(sizes)
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    assert cap.samples == sum(sizes) == 60
    assert cap.loss == pytest.approx(ref, rel=1e-6)


def test_layer_spike_zeta_orientation_and_dense_E_against_dense_references():
    """Per layer: the principal spike's zeta = ||H_c q|| / sqrt(n) (so ||z||^2 = n), q follows the
    sign rule (largest entry of q positive), and E's reported norm is the dense SVD of G - (S1 + S12 + S2)."""
    from gradrank.core import engine
    from gradrank.models import capture as capture_mod
    from gradrank.models import registry as spec
    from gradrank.studies import layers as layers_mod

    cfg, problem = _deep_problem()
    cap = capture_mod.capture(problem, spec.linear_layers(problem.model))
    res = layers_mod.analyze_capture(cap, cfg, problem)
    routes = set()
    for name, f in cap.layers.items():
        grad, ds, _ = layers_mod.decompose_layer(f, problem.spike)
        dec = engine.run(grad, ds, cfg.analysis).dec
        r = res.layer(name)
        routes.add(r.spectrum_route)
        if r.spike["source"] == "principal":
            zz = (f.H - f.H.mean(0)) @ ds.q
            assert r.spike["zeta"] == pytest.approx(float(zz.norm()) / math.sqrt(f.rows), rel=1e-10), name
            assert float(ds.z.norm()) ** 2 == pytest.approx(f.rows, rel=1e-10), name
            assert float(ds.q[int(ds.q.abs().argmax())]) > 0, name  # the sign rule (core/spike.py)
        left, right = dec.spikes()
        E = grad.gradient() - left @ right
        assert r.norms["E"] == pytest.approx(float(torch.linalg.matrix_norm(E, 2)), rel=1e-8), name
    assert routes == {"factored", "dense"}


def _onestep_cfg(*sets):
    from gradrank import config
    from gradrank.studies import onestep

    small = ["data.n=40", "data.d=30", "model.width=50", "data.n_test=40", "model.activation=tanh"]
    return onestep.resolve(config.load(sets=[*small, *sets], seed=0))


def test_onestep_update_singular_values_are_those_of_W1_minus_W0_under_mean_field():
    """update_s1, update_s2 against numpy's SVD of the actual update (mean field: lr multiplier m != 1)."""
    import numpy as np

    from gradrank.studies import analyze as analysis
    from gradrank.studies import onestep
    from gradrank.studies import train as training

    cfg = _onestep_cfg("model.scaling=mf", "onestep.eta=[0.01]", "onestep.steps=1")
    p = onestep.study(cfg).points[0]
    _, ds, net0 = analysis.prepare(cfg)
    mult = training.lr_multiplier(cfg, net0.m)
    assert mult == net0.m
    net, _ = onestep.step(cfg, ds, net0, 0.01, mult)
    s = np.linalg.svd((net.W - net0.W).numpy(), compute_uv=False)
    assert [p.update_s1, p.update_s2] == pytest.approx(s[:2].tolist(), rel=1e-8)


def test_onestep_steps_take_the_input_noise_draw_of_their_step():
    """onestep.steps > 1 with input noise: step t uses noise draw t, as training's full-batch gradient does."""
    from gradrank.models.twolayer import Network
    from gradrank.studies import analyze as analysis
    from gradrank.studies import onestep
    from gradrank.studies import train as training

    cfg = _onestep_cfg("onestep.steps=3", "regularizer.input_noise=0.3")
    _, ds, net0 = analysis.prepare(cfg)
    mult = training.lr_multiplier(cfg, net0.m)
    net, diverged = onestep.step(cfg, ds, net0, 0.5, mult)
    ref = net0
    for t in range(3):
        G = training.full_gradient(cfg, ds, ref, t)[3]
        ref = Network(ref.W - 0.5 * mult * G.T, ref.a, ref.gamma, ref.act)
    assert not diverged
    torch.testing.assert_close(net.W, ref.W, rtol=1e-12, atol=1e-14)
    G0 = training.full_gradient(cfg, ds, net0, 0)[3]
    assert float((training.full_gradient(cfg, ds, net0, 1)[3] - G0).norm()) > 1e-6 * float(G0.norm())  # the draws differ
