"""The one-step protocol: the step against torch autograd, the ridge readout against numpy's least
squares, eta = 0 against an independent random-features fit, the alignments against an independent
computation, the result files, the report, and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _reliability import tree
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.results import onestep as onestep_out
from gradrank.studies import analyze as analysis
from gradrank.studies import onestep
from gradrank.studies import train as training

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["data.n=60", "data.d=40", "model.width=70", "data.n_test=50"]


def cfg_of(*sets, seed=0):
    return onestep.resolve(config.load(sets=[*SMALL, *sets], seed=seed))


def autograd_step(cfg, ds, net, eta: float, mult: float, steps: int = 1) -> torch.Tensor:
    """W after `steps` steps W <- W - eta * mult * dL/dW, L = MSE + wd/2 ||W||^2 + jac (1/n) sum ||grad_x f||^2
    by torch autograd (double backprop for the Jacobian penalty)."""
    rc = cfg.regularizer
    act = {"tanh": torch.tanh, "relu": torch.relu}[cfg.model.activation]
    W = net.W.clone()
    for _ in range(steps):
        W = W.detach().requires_grad_(True)
        X = ds.X.clone().requires_grad_(True)
        f = net.gamma * act(X @ W.T) @ net.a
        loss = 0.5 * ((f - ds.y) ** 2).mean() + 0.5 * rc.weight_decay * (W**2).sum()
        if rc.jacobian:
            (gx,) = torch.autograd.grad(f.sum(), X, create_graph=True)  # rows: grad_x f(x_i)
            loss = loss + rc.jacobian * (gx**2).sum(1).mean()
        (gW,) = torch.autograd.grad(loss, W)
        W = W - eta * mult * gW
    return W.detach()


@pytest.mark.parametrize(
    "sets,steps",
    [
        (["model.activation=tanh", "model.scaling=ntk"], 1),
        (["model.activation=tanh", "model.scaling=mf", "regularizer.weight_decay=0.05"], 1),
        (["model.activation=tanh", "model.scaling=ntk", "regularizer.jacobian=0.3"], 2),
        (["model.activation=relu", "model.scaling=mf", "regularizer.weight_decay=0.01"], 3),
    ],
)
def test_step_matches_autograd(sets, steps):
    cfg = cfg_of(*sets, f"onestep.steps={steps}")
    cfg, ds, net0 = analysis.prepare(cfg)
    mult = training.lr_multiplier(cfg, net0.m)
    assert mult == (net0.m if cfg.model.scaling == "mf" else 1.0)  # training's convention: lr * m for mean field
    eta = 0.7 if cfg.model.scaling == "ntk" else 0.02
    net, diverged = onestep.step(cfg, ds, net0, eta, mult)
    assert not diverged
    ref = autograd_step(cfg, ds, net0, eta, mult, steps)
    assert float((net.W - net0.W).norm()) > 1e-3 * float(net0.W.norm())  # a real move
    torch.testing.assert_close(net.W, ref, rtol=1e-10, atol=1e-12)


def test_lr_scale_none_takes_eta_as_given():
    cfg = cfg_of("model.scaling=mf", "train.lr_scale=none")
    assert training.lr_multiplier(cfg, 70) == 1.0


@pytest.mark.parametrize("n,m", [(30, 50), (50, 30)])
def test_ridge_matches_numpy_lstsq(n, m):
    rng = np.random.default_rng(n)
    Phi, y = rng.standard_normal((n, m)), rng.standard_normal(n)
    lams = [1e-4, 0.1, 3.0]
    A = onestep.ridge(torch.from_numpy(Phi), torch.from_numpy(y), lams).numpy()
    one = onestep.ridge(torch.from_numpy(Phi), torch.from_numpy(y), [0.1]).numpy()  # the Cholesky route
    np.testing.assert_allclose(one[:, 0], A[:, 1], rtol=1e-8, atol=1e-10)
    for j, lam in enumerate(lams):  # min (1/n)||Phi a - y||^2 + lam ||a||^2 = least squares of [Phi; sqrt(n lam) I]
        aug = np.vstack([Phi, math.sqrt(n * lam) * np.eye(m)])
        ref = np.linalg.lstsq(aug, np.concatenate([y, np.zeros(m)]), rcond=None)[0]
        np.testing.assert_allclose(A[:, j], ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("readout", ["same", "fresh"])
def test_eta_zero_is_random_features_exactly(readout):
    cfg = cfg_of("onestep.eta=[0.0, 3.0]", "onestep.ridge_select=fixed", "onestep.ridge=0.01", f"onestep.readout={readout}")
    res = onestep.study(cfg)
    rf = res.points[0]
    _, ds, net0 = analysis.prepare(cfg)
    net, _ = onestep.step(cfg, ds, net0, 0.0, 1.0)
    assert net.W is net0.W  # no arithmetic at all
    X, y = ds.X, ds.y
    if readout == "fresh":  # n new samples of the same model: same law, other draws
        from gradrank.data import spiked as data

        X, y = data.fresh(cfg.data, cfg.seed, cfg.loss.kind, ds, ds.n, "onestep_readout", "onestep_readout_noise")
        assert X.shape == ds.X.shape and not torch.allclose(X, ds.X) and not torch.allclose(X[:50], ds.X_test[:50])
    # random features by hand: relu(X W0^T)/sqrt(m), m x m normal equations
    X, Xt, y, yt, W0 = (t.numpy() for t in (X, ds.X_test, y, ds.y_test, net0.W))
    m = W0.shape[0]
    Phi, Phit = np.maximum(X @ W0.T, 0) / math.sqrt(m), np.maximum(Xt @ W0.T, 0) / math.sqrt(m)
    a = np.linalg.solve(Phi.T @ Phi + len(y) * 0.01 * np.eye(m), Phi.T @ y)
    assert rf.test_error == pytest.approx(float(np.mean((Phit @ a - yt) ** 2)), rel=1e-9)
    assert rf.train_error == pytest.approx(float(np.mean((Phi @ a - y) ** 2)), rel=1e-9)
    assert math.isnan(rf.align_spike) and rf.update_fro == 0.0
    assert res.points[1].test_error != rf.test_error


def test_alignments_match_an_independent_computation():
    """Linear target on the bulk, n > d: the index direction is recovered by least squares of y on X_B,
    the update by the closed-form gradient in numpy, its singular vectors by numpy's SVD."""
    cfg = cfg_of("data.n=150", "data.target=linear", "data.nu=0.35", "onestep.eta=[0.0, 2.0]", "model.activation=relu")
    res = onestep.study(cfg)
    p = res.points[1]
    _, ds, net0 = analysis.prepare(cfg)
    X, XB, y, q, W0, a = (t.numpy() for t in (ds.X, ds.X_B, ds.y, ds.q, net0.W, net0.a))
    beta = np.linalg.lstsq(XB, y, rcond=None)[0]
    n, m = X.shape[0], W0.shape[0]
    gamma = 1 / math.sqrt(m)
    Z = X @ W0.T
    r = gamma * np.maximum(Z, 0) @ a - y
    G = gamma / n * X.T @ (r[:, None] * a[None, :] * (Z > 0))  # Prop. 2.1
    U = np.linalg.svd(-2.0 * G.T, full_matrices=False)[2].T  # right singular vectors of W1 - W0
    cos = lambda u, v: abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))  # noqa: E731
    assert p.align_target == pytest.approx(cos(U[:, 0], beta), abs=1e-8)
    assert p.align_spike == pytest.approx(cos(U[:, 0], q), abs=1e-8)
    assert p.align_residue == pytest.approx(cos(U[:, 0], XB.T @ r), abs=1e-8)
    assert p.align_target_2 == pytest.approx(cos(U[:, 1], beta), abs=1e-7)
    assert p.align_spike_2 == pytest.approx(cos(U[:, 1], q), abs=1e-7)
    assert p.update_s1 == pytest.approx(np.linalg.svd(2.0 * G, compute_uv=False)[0], rel=1e-9)
    assert 0.05 < p.align_spike < 0.999  # a value that could be wrong either way


def test_steps_above_one_take_the_singular_vectors_of_the_update():
    cfg = cfg_of("onestep.eta=[1.5]", "onestep.steps=3", "model.activation=tanh")
    p = onestep.study(cfg).points[0]
    _, ds, net0 = analysis.prepare(cfg)
    dW = (autograd_step(cfg, ds, net0, 1.5, 1.0, 3) - net0.W).numpy()
    Vt = np.linalg.svd(dW, full_matrices=False)[2]
    q = ds.q.numpy()
    assert p.align_spike == pytest.approx(abs(Vt[0] @ q), abs=1e-7)
    assert p.update_fro == pytest.approx(np.linalg.norm(dW), rel=1e-9)


def test_holdout_choice_is_the_best_candidate_on_the_held_out_rows():
    cfg = cfg_of("onestep.eta=[0.0]", "onestep.ridge_grid=[1e-4, 0.1, 100.0]", "onestep.readout=same")
    p = onestep.study(cfg).points[0]
    errors = {}
    for lam in cfg.onestep.ridge_grid:  # refit by hand on the other rows, same split stream
        _, ds, net0 = analysis.prepare(cfg)
        from gradrank.rng import generator

        idx = torch.randperm(ds.n, generator=generator(cfg.seed, "onestep_holdout"))[: round(0.2 * ds.n)]
        val = np.zeros(ds.n, bool)
        val[idx.numpy()] = True
        Phi = np.maximum(ds.X.numpy() @ net0.W.numpy().T, 0) / math.sqrt(net0.m)
        y = ds.y.numpy()
        a = np.linalg.solve(Phi[~val].T @ Phi[~val] + (~val).sum() * lam * np.eye(net0.m), Phi[~val].T @ y[~val])
        errors[lam] = float(np.mean((Phi[val] @ a - y[val]) ** 2))
    assert p.ridge == min(errors, key=errors.get)


def test_result_files_round_trip_and_report(tmp_path):
    cfg = cfg_of("onestep.eta=[0.0, 1.0, 4.0]", "output.name=<script>alert(1)</script>")
    res = onestep.study(cfg, seeds=[0, 1, 2])
    from gradrank import api

    out = api.save(res, tmp_path / "os")
    back = onestep_out.read(out)
    assert json.dumps(back.to_dict(), sort_keys=True) == json.dumps(res.to_dict(), sort_keys=True)
    payload = json.loads((out / "onestep.json").read_text())
    assert payload["schema"] == 1 and payload["config_hash"] == cfg.hash() and "torch" in payload["provenance"]["versions"]
    lines = (out / "onestep.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 1 + 9 and header[:3] == ["eta", "seed", "test_error"]
    assert {"align_target", "align_spike", "align_residue"} <= set(header)
    row = dict(zip(header, lines[2].split(",")))
    assert float(row["test_error"]) == pytest.approx(res.points[1].test_error, rel=1e-15)
    s = res.by_eta[1]  # summary against the points
    assert s.test_error == pytest.approx(np.mean([p.test_error for p in res.points if p.eta == 1.0]))
    assert s.improvement == pytest.approx(1 - s.test_error / res.by_eta[0].test_error)
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'id="fig-eta"' in html and 'id="fig-scatter"' in html and "bootstrap" in html
    m = json.loads((out / "metrics.json").read_text())
    assert m["eta"]["4"]["test_error"] == pytest.approx(res.by_eta[2].test_error)


def test_correlation_ci_covers_a_known_linear_relation():
    from gradrank.core.fits import bootstrap_correlation
    from gradrank.rng import generator

    rng = np.random.default_rng(0)
    x = rng.uniform(size=200)
    y = -2 * x + 0.5 * rng.standard_normal(200)
    true_r = -2 * math.sqrt(1 / 12) / math.sqrt(4 / 12 + 0.25)  # population Pearson r
    c = bootstrap_correlation(x, y, generator(0, "onestep_bootstrap"))
    assert c.ci_low < c.pearson < c.ci_high and c.ci_low < true_r < c.ci_high
    assert c.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12) and c.ci_high - c.ci_low < 0.3


def test_result_from_foreign_json_is_bad_input(tmp_path):
    from gradrank.errors import InputError

    (tmp_path / "onestep.json").write_text(json.dumps({"schema": 2, "kind": "onestep"}))
    with pytest.raises(InputError, match="schema"):
        onestep_out.read(tmp_path)
    (tmp_path / "onestep.json").write_text(json.dumps({"schema": 1, "kind": "onestep", "etas": [0]}))
    with pytest.raises(InputError, match="onestep.json: field '.*' is missing"):
        onestep_out.read(tmp_path)


# ---------------------------------------------------------------------------- the command line

TINY = ["--set", "data.n=30", "--set", "data.d=20", "--set", "model.width=25", "--set", "output.report=false"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--eta", "-1"], "--eta"),
        (["--eta", "0,-4"], "--eta"),
        (["--eta", ""], "--eta"),
        (["--eta", "1,,4"], "--eta"),
        (["--eta", "x"], "--eta"),
        (["--steps", "0"], "onestep.steps"),
        (["--ridge", "0"], "onestep.ridge"),
        (["--ridge", "-0.5"], "onestep.ridge"),
        (["--set", "onestep.ridge_grid=[0.1, 0.0]"], "onestep.ridge_grid"),
        (["--set", "onestep.eta=[]"], "onestep.eta"),
        (["--seeds", "0"], "--seeds"),
        (["--eta", "0,4,4"], "onestep.eta"),
    ],
)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    res = CliRunner().invoke(app, ["onestep", *TINY, *args, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert tree(tmp_path) == before


def test_cli_writes_the_directory_the_api_computes(tmp_path):
    res = CliRunner().invoke(app, ["onestep", *TINY, "--eta", "0,2", "--steps", "2", "--seeds", "2", "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    stored = onestep_out.read(tmp_path / "o")
    import gradrank

    direct = gradrank.onestep(
        overrides={"data.n": 30, "data.d": 20, "model.width": 25, "output.report": False}, eta=[0, 2], steps=2, seeds=2
    )
    assert stored.seeds == [0, 1] and stored.steps == 2 and stored.config.data.n_test == 30
    assert [p.test_error for p in stored.points] == pytest.approx([p.test_error for p in direct.points], rel=1e-12)


def test_fresh_readout_rows_follow_the_model():
    """No spike (zeta = 0) and a noiseless linear target: the fresh rows' labels are exactly beta^T x
    with the training target's beta, and the rows are new draws (neither the training nor the test rows)."""
    from gradrank.data import spiked as data

    cfg = cfg_of("data.target=linear", "data.zeta=0.0")
    ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
    X, y = data.fresh(cfg.data, cfg.seed, cfg.loss.kind, ds, 150, "onestep_readout", "onestep_readout_noise")
    beta = ds.index_directions[0].numpy()
    np.testing.assert_allclose(np.linalg.lstsq(X.numpy(), y.numpy(), rcond=None)[0], beta, atol=1e-10)
    np.testing.assert_allclose(np.linalg.lstsq(ds.X.numpy(), ds.y.numpy(), rcond=None)[0], beta, atol=1e-10)
    assert not torch.allclose(X[:50], ds.X[:50]) and not torch.allclose(X[:50], ds.X_test[:50])


def test_given_data_with_the_steps_own_rows(tmp_path, monkeypatch):
    """Built-in real data: no fresh sample (readout = fresh is bad input, refused before the data
    are read), no index directions (align_target NaN), the step still aligned with q or X_B^T r."""
    monkeypatch.chdir(tmp_path)
    base = ["--set", "data.source=digits", "--set", "data.n=200", "--set", "data.n_test=100", "--set", "model.width=80"]
    res = CliRunner().invoke(app, ["onestep", *base, "--set", "data.embed_dim=60", "--eta", "0,4", "-o", "o"])
    assert res.exit_code == 2 and "onestep.readout" in res.stderr and not (tmp_path / "o").exists()
    import gradrank

    out = gradrank.onestep(
        overrides={
            "data.source": "digits",
            "data.n": 200,
            "data.n_test": 100,
            "data.embed_dim": 60,
            "model.width": 80,
            "onestep.readout": "same",
        },
        eta=[0, 4],
    )
    p = out.points[1]
    assert math.isnan(p.align_target) and 0 < p.align_spike <= 1 and 0 < p.align_residue <= 1
    assert math.isfinite(p.test_error) and p.test_error != out.points[0].test_error


def test_teacher_target_span_is_the_projection_onto_the_teacher_rows():
    """A teacher network's rows are not orthonormal: align_target is the norm of u1's projection
    onto their span, B^T (B B^T)^-1 B u1, computed here from the update's numpy SVD."""

    cfg = cfg_of("data.target=teacher", "data.teacher_width=3", "onestep.eta=[2.0]", "model.activation=tanh")
    p = onestep.study(cfg).points[0]
    _, ds, net0 = analysis.prepare(cfg)
    dW = (autograd_step(cfg, ds, net0, 2.0, 1.0) - net0.W).numpy()
    u = np.linalg.svd(dW, full_matrices=False)[2][0]
    B = ds.index_directions.numpy()
    assert B.shape == (3, ds.d) and abs(B[0] @ B[1]) > 1e-3  # unit rows, not orthogonal
    proj = B.T @ np.linalg.solve(B @ B.T, B @ u)
    assert p.align_target == pytest.approx(np.linalg.norm(proj), abs=1e-8)
    assert p.align_target_2 == pytest.approx(
        np.linalg.norm(B.T @ np.linalg.solve(B @ B.T, B @ np.linalg.svd(dW)[2][1])), abs=1e-7
    )


def test_default_onestep_section_leaves_other_hashes_alone():
    """An analyze config hashes as before the onestep section existed (it is left out at its defaults);
    any onestep setting enters the hash."""
    import dataclasses
    import hashlib

    cfg = config.load(sets=SMALL)
    d = cfg.to_dict()
    d.pop("output"), d.pop("onestep")
    assert cfg.hash() == hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert dataclasses.asdict(cfg.onestep) == dataclasses.asdict(config.OnestepConfig())
    for key, value in (("onestep.eta", [0.0, 2.0]), ("onestep.steps", 2), ("onestep.readout", "same")):
        assert cfg.replace(**{key: value}).hash() != cfg.hash()


def test_a_step_out_of_range_is_recorded_not_raised(tmp_path):
    """Three steps at eta = 1e150: the second gradient overflows float64's safe range; the point is
    kept with diverged = True and a NaN test error, the others are unaffected, the files are written."""
    cfg = cfg_of("onestep.eta=[0.0, 1.0, 1e150]", "onestep.steps=3", "output.report=false")
    res = onestep.study(cfg)
    ok, small, huge = res.points
    assert not small.diverged and math.isfinite(small.test_error)
    assert huge.diverged and math.isnan(huge.test_error) and huge.update_fro > 1e140
    from gradrank import api

    api.save(res, tmp_path / "o")
    assert "True" in (tmp_path / "o" / "onestep.csv").read_text().splitlines()[3]
