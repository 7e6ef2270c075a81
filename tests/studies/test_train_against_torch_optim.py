"""Gaps of the mutation audit (docs/testing.md), training side: gradient descent, SGD and Adam against
torch.optim on an autograd objective step by step (outer weights and penalties included), the
objective's value, and every trajectory column against a one-shot analysis of the same weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradrank import config
from gradrank.models.twolayer import Network
from gradrank.rng import generator
from gradrank.studies import analyze as analysis
from gradrank.studies import train as train

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = ["data.n=40", "data.d=30", "model.width=50", "output.report=false"]


def _cfg(*sets, seed=0):
    return train.resolve(config.load(sets=[*SIZE, *sets], seed=seed))


def _objective(cfg, W, a, X, y):
    """(1/n) sum 1/2 (f - y)^2 + lambda/2 ||W||^2 + lambda_J (1/n) sum ||grad_x f||^2, all by autograd
    (torch's own tanh/relu, not gradrank's activation table)."""
    act = {"tanh": torch.tanh, "relu": torch.relu}[cfg.model.activation]
    m = W.shape[0]
    gamma = 1 / math.sqrt(m) if cfg.model.scaling == "ntk" else 1 / m
    Xr = X.clone().requires_grad_(True)
    f = gamma * act(Xr @ W.T) @ a
    obj = (0.5 * (f - y) ** 2).mean()
    rc = cfg.regularizer
    if rc.weight_decay:
        obj = obj + 0.5 * rc.weight_decay * W.pow(2).sum()
    if rc.jacobian:
        gx = torch.autograd.grad(f.sum(), Xr, create_graph=True)[0]  # rows: grad_x f(x_i)
        obj = obj + rc.jacobian * gx.pow(2).sum(1).mean()
    return obj


def _reference(cfg, steps):
    """W_t (and a_t) for t = 0..steps by torch.optim on the autograd objective, with the mini-batch
    order reimplemented from the "batches" stream."""
    cfg, ds, net = analysis.prepare(cfg)
    tc = cfg.train
    W = net.W.clone().requires_grad_(True)
    a = net.a.clone().requires_grad_(tc.train_outer)
    lr = tc.lr * (net.m if cfg.model.scaling == "mf" and tc.optimizer != "adam" else 1)
    opt = torch.optim.Adam([W], lr=lr, betas=(0.9, 0.999), eps=1e-8) if tc.optimizer == "adam" else torch.optim.SGD([W], lr=lr)
    opt_a = torch.optim.SGD([a], lr=lr) if tc.train_outer else None  # docs/training.md: a takes plain gradient steps
    n = ds.n
    g = generator(cfg.seed, "batches")
    order, cursor = torch.randperm(n, generator=g), 0
    out = [(W.detach().clone(), a.detach().clone())]
    for _ in range(steps):
        if tc.optimizer == "gd":
            idx = torch.arange(n)
        else:
            if cursor + tc.batch_size > n:
                order, cursor = torch.randperm(n, generator=g), 0
            idx = order[cursor : cursor + tc.batch_size]
            cursor += tc.batch_size
        for o in (opt, opt_a):
            if o is not None:
                o.zero_grad()
        _objective(cfg, W, a, ds.X[idx], ds.y[idx]).backward()
        for o in (opt, opt_a):
            if o is not None:
                o.step()
        out.append((W.detach().clone(), a.detach().clone()))
    return cfg, ds, net, out


@pytest.mark.parametrize(
    "sets",
    [
        ("train.optimizer=gd", "train.lr=0.3"),
        ("train.optimizer=gd", "train.lr=0.01", "model.scaling=mf"),  # lr_effective = lr m
        ("train.optimizer=gd", "train.lr=0.3", "train.train_outer=true", "model.activation=tanh"),
        ("train.optimizer=sgd", "train.lr=0.3", "train.batch_size=15"),  # 40 = 15 + 15 + 10: a new order at step 3
        ("train.optimizer=adam", "train.lr=0.01", "train.batch_size=16"),
        ("train.optimizer=adam", "train.lr=0.01", "train.batch_size=16", "model.scaling=mf", "train.train_outer=true"),
        (
            "train.optimizer=gd",
            "train.lr=0.3",
            "regularizer.weight_decay=0.05",
            "regularizer.jacobian=0.1",
            "model.activation=tanh",
        ),
        ("train.optimizer=sgd", "train.lr=0.3", "train.batch_size=10", "regularizer.jacobian=0.1", "model.activation=tanh"),
    ],
)
def test_optimisers_match_torch_optim_step_by_step(sets):
    """After every step (trained for 1..5 steps) W and a equal torch.optim's on the autograd objective."""
    steps = 5
    cfg = _cfg(*sets, f"train.steps={steps}", f"train.record_every={steps}", f"train.checkpoint_every={steps}")
    _, _, _, ref = _reference(cfg, steps)
    for t in (1, 3, 5):
        tr = train.train(cfg.replace(**{"train.steps": t, "train.record_every": t, "train.checkpoint_every": t}))
        W, a = ref[t]
        assert torch.allclose(tr.W, W, rtol=1e-10, atol=1e-12), (sets, t, float((tr.W - W).abs().max()))
        assert torch.allclose(tr.a, a, rtol=1e-10, atol=1e-12), (sets, t)
        assert not torch.equal(W, ref[0][0])  # the step moved W
        if cfg.train.train_outer:
            assert not torch.equal(a, ref[0][1])


def test_objective_value_includes_every_penalty():
    """The objective recorded (trajectory and analysis) is the autograd objective's value: data loss plus
    lambda/2 ||W||^2 plus lambda_J times the mean squared input gradient."""
    cfg = _cfg("regularizer.weight_decay=0.05", "regularizer.jacobian=0.3", "model.activation=tanh", "train.steps=0")
    row = train.train(cfg).rows[0]
    cfg, ds, net = analysis.prepare(cfg)
    ref = float(_objective(cfg, net.W, net.a, ds.X, ds.y).detach())
    assert row["objective"] == pytest.approx(ref, rel=1e-12)
    assert analysis.analyze(cfg).metrics["loss"] == pytest.approx(ref, rel=1e-12)
    data_only = float(
        _objective(
            cfg.replace(**{"regularizer.weight_decay": 0.0, "regularizer.jacobian": 0.0}), net.W, net.a, ds.X, ds.y
        ).detach()
    )
    assert row["train_loss"] == pytest.approx(data_only, rel=1e-12)
    assert ref - data_only > 1e-3 * ref  # the penalties are a visible part of it


def _np_forward(net, W, X):
    return net.gamma * np.tanh(X @ W.T) @ net.a.numpy()


def test_every_trajectory_column_against_a_one_shot_analysis():
    """Each record of a penalised GD run against the analysis of the weights torch.optim reaches at that
    step: losses, objective, norms, tracked values, outliers, stable rank, alignments, drift, the
    principal angle between consecutive top-k subspaces (from dense SVDs) and the tracker's state."""
    cfg = _cfg(
        "train.steps=6",
        "train.record_every=2",
        "train.checkpoint_every=6",
        "train.lr=0.5",
        "analysis.top_k=2",
        "data.nu=0.45",
        "model.planted=1.0",
        "model.planted_vector=signs",
        "model.activation=tanh",
        "regularizer.weight_decay=0.01",
        "regularizer.jacobian=0.05",
    )
    tr = train.train(cfg)
    assert [r["step"] for r in tr.rows] == [0, 2, 4, 6]
    cfg, ds, net0, ref = _reference(cfg, 6)
    W0 = ref[0][0].numpy()
    U_prev = None
    for row in tr.rows:
        t = row["step"]
        W = ref[t][0]
        net = Network(W, net0.a, net0.gamma, net0.act)
        m = analysis.analyze_state(cfg, ds, net).metrics
        Xn, yn = ds.X.numpy(), ds.y.numpy()
        loss = float((0.5 * (_np_forward(net, W.numpy(), Xn) - yn) ** 2).mean())
        test_loss = float((0.5 * (_np_forward(net, W.numpy(), ds.X_test.numpy()) - ds.y_test.numpy()) ** 2).mean())
        assert row["train_loss"] == pytest.approx(loss, rel=1e-10)
        assert row["test_loss"] == pytest.approx(test_loss, rel=1e-10)
        assert row["objective"] == pytest.approx(float(_objective(cfg, W, net.a, ds.X, ds.y).detach()), rel=1e-10)
        assert row["objective"] == pytest.approx(m["loss"], rel=1e-10)
        from gradrank.models import regularizers
        from gradrank.models.closed_form import gradient

        reg = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, "mse").numpy()
        G = gradient(net, ds.X, ds.y, "mse").dense().numpy() + reg
        U, sv, _ = np.linalg.svd(G)
        for key in ("S1", "S12", "S2"):
            assert row[key] == pytest.approx(m["norms"][key], rel=1e-10), (t, key)
        assert row["E"] == pytest.approx(m["norms"]["E"], rel=1e-5)  # tracked at residual 1e-3
        assert row["reg"] == pytest.approx(np.linalg.norm(reg, 2), rel=1e-5)
        assert row["G"] == pytest.approx(sv[0], rel=1e-9)
        assert [row["s1"], row["s2"]] == pytest.approx(list(sv[:2]), rel=1e-8)
        assert row["G_fro"] == pytest.approx(np.linalg.norm(G), rel=1e-10)
        assert row["stable_rank"] == pytest.approx(np.linalg.norm(G) ** 2 / sv[0] ** 2, rel=1e-8)
        assert row["outliers"] == m["rank"]["outliers"]
        for i in (1, 2):
            assert row[f"align_residue_{i}"] == pytest.approx(m["alignment"]["residue"][i - 1], abs=1e-6), (t, i)
            assert row[f"align_spike_{i}"] == pytest.approx(m["alignment"]["spike"][i - 1], abs=1e-6), (t, i)
        assert row["drift"] == pytest.approx(np.linalg.norm(W.numpy() - W0), rel=1e-10, abs=1e-15)
        Uk = U[:, :2]
        if U_prev is None:
            assert math.isnan(row["drift_max_angle"])
        else:
            c = np.linalg.svd(U_prev.T @ Uk, compute_uv=False).min()
            angle = math.degrees(math.acos(min(c, 1.0)))
            assert angle > 0.05
            assert row["drift_max_angle"] == pytest.approx(angle, abs=1e-3), t
        U_prev = Uk
        assert row["track_residual"] <= 1e-6 and row["track_fallback"] == 0 and row["track_iterations"] >= 1
    assert tr.rows[-1]["drift"] > 0


def test_noisy_training_records_the_clean_loss_and_the_step_s_noise_draw():
    """With input noise, step t's gradient is taken at noise draw t; the record's decomposition is that
    draw's analysis, its train loss the clean data's."""
    cfg = _cfg("regularizer.input_noise=0.3", "train.steps=2", "train.record_every=1", "train.lr=0.3", "model.activation=tanh")
    tr = train.train(cfg)
    cfg, ds, net0 = analysis.prepare(cfg)
    W = net0.W
    from gradrank.models import regularizers
    from gradrank.models.closed_form import gradient

    for t, row in enumerate(tr.rows):
        net = Network(W, net0.a, net0.gamma, net0.act)
        m = analysis.analyze_state(cfg, ds, net, noise_draw=t).metrics
        other = analysis.analyze_state(cfg, ds, net, noise_draw=t + 1).metrics
        assert row["S1"] == pytest.approx(m["norms"]["S1"], rel=1e-10) and row["S1"] != pytest.approx(
            other["norms"]["S1"], rel=1e-6
        )
        assert row["train_loss"] == pytest.approx(
            float((0.5 * (_np_forward(net, W.numpy(), ds.X.numpy()) - ds.y.numpy()) ** 2).mean()), rel=1e-10
        )
        noisy = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, t)
        W = W - 0.3 * gradient(net, noisy.X, noisy.y, "mse").dense().T
