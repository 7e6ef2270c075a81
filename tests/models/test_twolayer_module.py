"""The two-layer network as an nn.Module (gradrank.models.twolayer.TwoLayer, the SPEC `twolayer`):
its forward against the closed-form Network's and a numpy one, its autograd gradient against the
closed form G of Prop. 2.1 (arXiv 2510.01303), and the SPEC in the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradrank import config
from gradrank.models import registry
from gradrank.models.closed_form import gradient, loss_and_residue
from gradrank.models.twolayer import TwoLayer
from gradrank.studies import analyze as analysis

SETS = ["data.n=30", "data.d=20", "model.width=25"]


@pytest.mark.parametrize("sets", [("loss.kind=mse", "model.activation=relu"), ("loss.kind=logistic", "model.activation=tanh")])
def test_forward_equals_the_closed_form_networks_and_numpys(sets):
    cfg, ds, net = analysis.prepare(config.load(sets=[*SETS, *sets]))
    model = TwoLayer.of(net)
    f = model(ds.X)
    assert torch.equal(f, net.forward(ds.X))  # one forward pass: bit for bit
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[cfg.model.activation]
    ref = net.gamma * act(ds.X.numpy() @ net.W.numpy().T) @ net.a.numpy()
    assert np.allclose(f.detach().numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sets", [("loss.kind=mse", "model.activation=relu"), ("loss.kind=logistic", "model.activation=tanh")])
def test_autograd_gradient_equals_the_closed_form_G(sets):
    """dL/dW by autograd through TwoLayer equals G^T, G = (gamma_m/n) X^T [(r a^T) o sigma'(X W^T)] (Prop. 2.1)."""
    cfg, ds, net = analysis.prepare(config.load(sets=[*SETS, *sets]))
    model = TwoLayer.of(net)
    loss = loss_and_residue(cfg.loss.kind, model(ds.X), ds.y)[0].mean()
    loss.backward()
    factors = model.factors(ds.X, ds.y, cfg.loss.kind)
    G = factors.dense()  # d x m
    assert torch.allclose(model.W.grad, G.T, rtol=1e-12, atol=1e-15 * float(G.abs().max()))
    assert factors.loss == pytest.approx(float(loss), rel=1e-14)
    assert torch.equal(factors.D, gradient(net, ds.X, ds.y, cfg.loss.kind).D)  # a thin delegate
    assert model.a.grad is None  # a is fixed unless train_outer


def test_train_outer_makes_a_trainable_and_its_gradient_is_the_closed_forms():
    cfg, ds, net = analysis.prepare(config.load(sets=[*SETS, "model.activation=tanh"]))
    model = TwoLayer.of(net, train_outer=True)
    loss_and_residue("mse", model(ds.X), ds.y)[0].mean().backward()
    r = model.factors(ds.X, ds.y, "mse").r
    ref = net.gamma * (torch.tanh(ds.X @ net.W.T).T @ r) / ds.n  # dL/da_j = (gamma/n) sum_i r_i sigma(w_j^T x_i)
    assert torch.allclose(model.a.grad, ref, rtol=1e-12, atol=1e-16)


def test_the_network_view_shares_the_modules_weights():
    _, ds, net = analysis.prepare(config.load(sets=SETS))
    model = TwoLayer.of(net)
    view = model.network()
    with torch.no_grad():
        model.W.mul_(2.0)
    assert torch.equal(view.W, 2.0 * net.W)  # the view follows an in-place optimiser step
    assert not torch.equal(net.W, model.W.detach())  # the module holds a copy of net's weights


def test_the_spec_twolayer_resolves_to_the_paper_network_at_its_initialisation():
    cfg = config.load(sets=SETS)
    problem = registry.resolve("twolayer", cfg)
    _, ds, net = analysis.prepare(cfg)
    assert problem.name == "twolayer" and list(registry.linear_layers(problem.model)) == ["inner"]
    ((X, y),) = problem.batches
    assert torch.equal(X, ds.X) and torch.equal(problem.model.W.detach(), net.W)
    ref = float(loss_and_residue(cfg.loss.kind, net.forward(ds.X), y)[0].mean())
    assert float(problem.loss(problem.model(X), y)) == pytest.approx(ref, rel=1e-15)
    assert problem.spike.layer == "inner" and math.isclose(problem.spike.zeta, float(ds.zeta))


def test_registry_names_every_built_in_spec_and_tells_user_files_apart():
    assert list(registry.BUILT_IN) == ["twolayer", "mlp", "minilm"]
    assert all(not registry.is_file(name) for name in registry.BUILT_IN)
    assert registry.is_file("models/net.py:build")


def test_file_digest_is_the_files_sha256_and_refuses_a_changed_file(tmp_path):
    import hashlib

    path = tmp_path / "net.py"
    path.write_text("def build(cfg):\n    return {}\n")
    digest = registry.file_digest(f"{path}:build")
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(Exception, match="advise.model_sha256"):
        registry.file_digest(f"{path}:build", "0" * 64, "advise.model_sha256")
