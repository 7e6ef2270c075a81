"""Regularisers (docs/model.md, section 6): closed forms against torch autograd, input noise in the decomposition."""

import pytest
import torch

from gradrank.config import ACTIVATIONS
from gradrank.models import regularizers
from gradrank.models.closed_form import gradient
from gradrank.models.mu import compute_mu, decompose
from gradrank.studies import analyze as analysis

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(small_cfg, *sets, n=24, d=7, m=11, seed=0):
    cfg = small_cfg("data.nu=0.3", "model.planted=1.0", *sets, n=n, d=d, m=m, seed=seed)
    return analysis.prepare(cfg)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _input_derivatives(net, X, W, laplacian=False):
    """grad_x f (n x d) and, optionally, the Laplacian of f at every row, by autograd (create_graph)."""
    X = X.clone().requires_grad_(True)
    f = net.gamma * (net.act.f(X @ W.T) @ net.a)
    (gx,) = torch.autograd.grad(f.sum(), X, create_graph=True)  # f_i depends on x_i only
    if not laplacian:
        return f, gx, None
    lap = torch.zeros_like(f)
    for k in range(X.shape[1]):
        (h,) = torch.autograd.grad(gx[:, k].sum(), X, create_graph=True, allow_unused=True)
        if h is not None:  # None: grad_x f does not depend on x (piecewise-linear sigma)
            lap = lap + h[:, k]
    return f, gx, lap


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_jacobian_penalty_gradient_matches_double_backward(small_cfg, activation):
    cfg, ds, net = _setup(small_cfg, f"model.activation={activation}")
    W = net.W.clone().requires_grad_(True)
    _, gx, _ = _input_derivatives(net, ds.X, W)
    R = gx.pow(2).sum(1).mean()
    (ref,) = torch.autograd.grad(R, W)
    assert regularizers.jacobian_value(net, ds.X) == pytest.approx(R.item(), rel=1e-12)
    err = _rel(regularizers.jacobian_gradient(net, ds.X), ref.T)
    assert err < 1e-9, err


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["mse", "logistic"])
def test_noise_surrogate_gradient_matches_autograd(small_cfg, activation, loss):
    """P = tau^2/(2n) sum [l''(f)|grad_x f|^2 + l'(f) Lap f], every derivative by autograd (triple backward)."""
    tau = 0.3
    cfg, ds, net = _setup(small_cfg, f"model.activation={activation}", f"loss.kind={loss}", n=16, d=5, m=9)
    W = net.W.clone().requires_grad_(True)
    f, gx, lap = _input_derivatives(net, ds.X, W, laplacian=True)
    fv = f.detach().clone().requires_grad_(True)
    ell = 0.5 * (fv - ds.y) ** 2 if loss == "mse" else torch.nn.functional.softplus(-ds.y * fv)
    (r_fn,) = torch.autograd.grad(ell.sum(), fv, create_graph=True)
    (h_fn,) = torch.autograd.grad(r_fn.sum(), fv)
    # re-evaluate r and l'' at the graph-connected f (they are functions of f only)
    if loss == "mse":
        r, h = f - ds.y, torch.ones_like(f)
    else:
        r, h = -ds.y * torch.sigmoid(-ds.y * f), torch.sigmoid(f) * torch.sigmoid(-f)
    assert torch.allclose(r.detach(), r_fn.detach(), atol=1e-14) and torch.allclose(h.detach(), h_fn.detach(), atol=1e-14)
    P = 0.5 * tau**2 * (h * gx.pow(2).sum(1) + r * lap).mean()
    (ref,) = torch.autograd.grad(P, W)
    assert regularizers.surrogate_value(net, ds.X, ds.y, loss, tau) == pytest.approx(P.item(), rel=1e-10)
    err = _rel(regularizers.surrogate_gradient(net, ds.X, ds.y, loss, tau), ref.T)
    assert err < 1e-9, err


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_noise_surrogate_approaches_the_average_over_draws(small_cfg, activation):
    """E_N G(X + tau N) - G(X) -> grad P as tau -> 0, here estimated with K = 20000 draws.

    Statistical tolerance: the zero-mean O(tau) fluctuation averages to O(tau/sqrt(K)), the
    surrogate's neglected O(tau^4) terms are a few per cent of its O(tau^2) value."""
    tau, K = 0.15, 20000
    cfg, ds, net = _setup(small_cfg, f"model.activation={activation}", "data.nu=0.0", n=12, d=4, m=6, seed=3)
    avg = cfg.replace(**{"regularizer.input_noise": tau, "regularizer.noise_mode": "average", "regularizer.noise_draws": K})
    ds_K = regularizers.noisy_data(avg.regularizer, avg.seed, ds)
    delta = gradient(net, ds_K.X, ds_K.y, "mse").dense() - gradient(net, ds.X, ds.y, "mse").dense()
    surrogate = regularizers.surrogate_gradient(net, ds.X, ds.y, "mse", tau)
    err = _rel(delta, surrogate)
    assert err < 0.15, err
    loss_gap = gradient(net, ds_K.X, ds_K.y, "mse").loss - gradient(net, ds.X, ds.y, "mse").loss
    assert loss_gap == pytest.approx(regularizers.surrogate_value(net, ds.X, ds.y, "mse", tau), rel=0.15)


def test_weight_decay_adds_exactly_lambda_WT(small_cfg):
    lam = 0.37
    cfg, ds, net = _setup(small_cfg, n=30, d=20, m=25)
    plain = analysis.analyze_state(cfg, ds, net)
    wd = analysis.analyze_state(cfg.replace(**{"regularizer.weight_decay": lam}), ds, net)
    assert torch.equal(
        regularizers.penalty_gradient(cfg.replace(**{"regularizer.weight_decay": lam}).regularizer, net, ds.X, ds.y, "mse"),
        lam * net.W.T,
    )
    assert wd.metrics["norms"]["reg"] == pytest.approx(lam * float(torch.linalg.matrix_norm(net.W, 2)), rel=1e-12)
    assert wd.metrics["reg"]["fro"] == pytest.approx(lam * float(net.W.norm()), rel=1e-12)
    for key in ("S1", "S12", "S2", "E"):  # the loss terms do not see the penalty
        assert wd.metrics["norms"][key] == pytest.approx(plain.metrics["norms"][key], rel=1e-12)
    assert wd.metrics["loss"] - plain.metrics["loss"] == pytest.approx(0.5 * lam * float(net.W.pow(2).sum()), rel=1e-12)


def test_noise_joins_the_bulk_and_the_average_is_the_mean_of_draws(small_cfg):
    """X + tau N = (X_B + tau N) + zeta z q^T, identity exact; average mode = mean of per-draw terms."""
    K, tau = 4, 0.5
    cfg, ds, net = _setup(
        small_cfg,
        "regularizer.input_noise=0.5",
        "regularizer.noise_mode=average",
        f"regularizer.noise_draws={K}",
        n=20,
        d=15,
        m=18,
    )
    dsK = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds)
    assert torch.allclose(dsK.X - dsK.X_B, ds.zeta * torch.outer(dsK.z, ds.q), atol=1e-13)
    N = (dsK.X - ds.X.repeat(K, 1)) / tau
    assert abs(float(N.std()) - 1.0) < 0.1 and float((N[:20] - N[20:40]).abs().max()) > 0.1  # fresh draws
    res = analysis.analyze_state(cfg, ds, net)
    assert res.metrics["identity_error"] < 1e-13
    grad = gradient(net, dsK.X, dsK.y, "mse")
    mu, _ = compute_mu("population", grad, dsK, net, 96)
    dec = decompose(grad, dsK, net, mu)
    G_blocks, S1_blocks, S2_blocks = 0, 0, 0
    for k in range(K):
        rows = slice(k * ds.n, (k + 1) * ds.n)
        blk = gradient(net, dsK.X[rows], dsK.y[rows], "mse")
        G_blocks = G_blocks + blk.dense() / K
        D_perp = blk.r[:, None] * net.a * (blk.Sp - mu)
        S1_blocks = S1_blocks + blk.coef * torch.outer(dsK.X_B[rows].T @ blk.r, net.a * mu) / K
        S2_blocks = S2_blocks + blk.coef * ds.zeta * torch.outer(ds.q, D_perp.T @ ds.z) / K
    assert _rel(grad.dense(), G_blocks) < 1e-13
    assert _rel(dec.S1.dense(), S1_blocks) < 1e-13 and _rel(dec.S2.dense(), S2_blocks) < 1e-13
    assert res.metrics["norms"]["S1"] == pytest.approx(dec.S1.norm(), rel=1e-12)
    single = analysis.analyze_state(cfg.replace(**{"regularizer.noise_mode": "single"}), ds, net)
    assert single.metrics["identity_error"] < 1e-13 and single.metrics["norms"]["S1"] != res.metrics["norms"]["S1"]


@pytest.mark.parametrize(
    "sets", [["regularizer.jacobian=0.5"], ["regularizer.input_noise=0.4", "regularizer.noise_mode=surrogate"]]
)
def test_dense_regularizers_are_reported_as_their_own_term(small_cfg, sets):
    cfg, ds, net = _setup(small_cfg, "model.activation=tanh", *sets, n=30, d=20, m=25)
    res = analysis.analyze_state(cfg, ds, net)
    reg = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, "mse")
    m = res.metrics
    assert m["norms"]["reg"] == pytest.approx(float(torch.linalg.matrix_norm(reg, 2)), rel=1e-10)
    assert m["shares"]["reg"] == pytest.approx(float(reg.norm()) ** 2 / m["norms"]["G_fro"] ** 2, rel=1e-10)
    for key, v in (("residue", torch.as_tensor(res.arrays["residue_dir"])), ("spike", ds.q)):
        assert m["reg"][key] == pytest.approx(float((v @ reg).norm()) / (float(v.norm()) * float(reg.norm())), rel=1e-10)
    G_loss = gradient(net, ds.X, ds.y, "mse").dense()
    assert m["singular_values"][0] == pytest.approx(float(torch.linalg.matrix_norm(G_loss + reg, 2)), rel=1e-10)
    assert m["identity_error"] < 1e-13


def _path(name, strength, steps, *sets):
    from gradrank import config
    from gradrank.studies import regpath

    cfg = config.load(
        sets=[
            "data.n=120",
            "data.d=150",
            "model.width=200",
            "data.nu=0.125",
            "data.alpha=0.8888888889",
            "train.lr=0.2",
            "output.report=false",
            *sets,
        ]
    )
    return regpath.run(cfg, {name: [0.0, strength]}, [0, 1, 2], steps).summary[name]


def test_regularisation_path_directions_are_seed_stable():
    """Reduced size (n=120, d=150, m=200) at the paper's nu = 1/8, alpha = 8/9, three seeds.

    Input noise (K = 8 draws) suppresses S2 and so raises ||S1||/||S2|| at initialisation; the
    Jacobian penalty raises ||S1||/||S2|| after 20 training steps; weight decay leaves the loss
    terms unchanged at fixed weights, and its own term lowers G's residue component relative to
    its spike component (lambda W^T opposes the residue spike)."""
    noise = _path("input_noise", 0.3, 0, "regularizer.noise_mode=average")
    assert noise["seed_stable"] and noise["log_change"]["S1_over_S2"]["min"] > 0.2
    assert noise["log_change"]["S2"]["max"] < -0.2
    jac = _path("jacobian", 10.0, 20)
    assert jac["seed_stable"] and jac["log_change"]["S1_over_S2"]["min"] > 0.1
    wd = _path("weight_decay", 1.0, 0)
    assert wd["log_change"]["S1_over_S2"]["max"] == 0.0 == wd["log_change"]["S1_over_S2"]["min"]
    assert wd["log_change"]["G_residue_over_spike"]["max"] < -0.2


def test_regpath_command_writes_csv_json_and_figure(tmp_path):
    import json

    from typer.testing import CliRunner

    from gradrank.cli.app import app

    out = tmp_path / "path"
    res = CliRunner().invoke(
        app,
        [
            "regpath",
            "--set",
            "data.n=30",
            "--set",
            "data.d=20",
            "--set",
            "model.width=25",
            "--grid",
            "weight_decay=0.5",
            "--grid",
            "jacobian=1",
            "--grid",
            "input_noise=0.2",
            "--seeds",
            "0,1",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "path.json").read_text())
    assert set(doc["summary"]) == {"weight_decay", "jacobian", "input_noise"} and doc["grids"]["jacobian"] == [0.0, 1.0]
    lines = (out / "path.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 2 * 2
    (out / "report.html").unlink()  # the figure is the report's, drawn from the stored path.csv alone
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    html = (out / "report.html").read_text()
    assert html.count('id="fig-regpath"') == 1 and html.count('id="fig-regpath-axes_') == len(doc["grids"]) == 3
    bad = CliRunner().invoke(app, ["regpath", "--grid", "dropout=0.1", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "dropout" in bad.output and not (tmp_path / "bad").exists()
