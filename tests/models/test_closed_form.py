"""The closed-form gradient (Prop. 2.1) against torch autograd, for every activation x loss x scaling."""

import itertools

import pytest
import torch

from gradrank.config import ACTIVATIONS
from gradrank.models import twolayer as network
from gradrank.models.closed_form import gradient
from gradrank.studies import analyze as analysis


def autograd_G(net, X, y, loss_kind):
    W = net.W.clone().requires_grad_(True)
    f = net.gamma * (net.act.f(X @ W.T) @ net.a)
    if loss_kind == "mse":
        L = (0.5 * (f - y) ** 2).mean()
    else:
        L = torch.nn.functional.softplus(-y * f).mean()
    (gW,) = torch.autograd.grad(L, W)
    return gW.T, L.item()


@pytest.mark.parametrize("activation,loss,scaling", list(itertools.product(ACTIVATIONS, ("mse", "logistic"), ("ntk", "mf"))))
def test_closed_form_matches_autograd(small_cfg, activation, loss, scaling):
    cfg = small_cfg(
        f"model.activation={activation}",
        f"loss.kind={loss}",
        f"model.scaling={scaling}",
        "data.nu=0.3",
        "model.planted=1.0",
        n=40,
        d=30,
        m=50,
    )
    _, ds, net = analysis.prepare(cfg)
    grad = gradient(net, ds.X, ds.y, loss)
    G_ref, L_ref = autograd_G(net, ds.X, ds.y, loss)
    err = float((grad.dense() - G_ref).norm() / G_ref.norm())
    assert err < 1e-10, err
    assert abs(grad.loss - L_ref) <= 1e-12 * max(1.0, abs(L_ref))


def test_scalings_differ_by_gamma(small_cfg):
    """gamma_m = c/sqrt(m) (NTK) vs c/m (MF)."""
    cfg = small_cfg()
    assert network.gamma_m(cfg.model, 100) == pytest.approx(0.1)
    assert network.gamma_m(cfg.replace(**{"model.scaling": "mf", "model.c": 2.0}).model, 100) == pytest.approx(0.02)


def test_activation_derivatives_match_autograd():
    """The first three derivatives of every activation against autograd (away from kinks), and the
    registry holds exactly the activations the config accepts."""
    from gradrank.core.activations import TRAITS, get

    assert tuple(TRAITS) == ACTIVATIONS
    u = torch.linspace(-3, 3, 101, dtype=torch.float64) + 1e-3
    for name in ACTIVATIONS:
        act = get(name, 0.1)
        x = u.clone().requires_grad_(True)
        (d1,) = torch.autograd.grad(act.f(x).sum(), x, create_graph=True)
        assert torch.allclose(act.d1(u), d1.detach(), atol=1e-12), name
        d2 = torch.autograd.grad(d1.sum(), x, create_graph=True)[0] if d1.requires_grad else torch.zeros_like(u)
        assert torch.allclose(act.d2(u), d2.detach(), atol=1e-12), name  # 0 for piecewise linear sigma
        d3 = torch.autograd.grad(d2.sum(), x)[0] if d2.requires_grad else torch.zeros_like(u)
        assert torch.allclose(act.d3(u), d3, atol=1e-11), name
