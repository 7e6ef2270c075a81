"""gradrank.studies.loop: each optimiser kind against a hand-computed step with torch.optim's
semantics, the hooks' place in a step, divergence, and the Problem step against autograd."""

from __future__ import annotations

import math

import pytest
import torch

from gradrank.errors import InputError
from gradrank.models.registry import Problem
from gradrank.studies import loop

LR = 0.05


def _quadratic(w: torch.Tensor, target: torch.Tensor):
    """step_fn for L(w) = 1/2 ||w - target||^2 (gradient w - target), filled by hand."""

    def step(t: int, backward: bool) -> float:
        r = w.detach() - target
        if backward:
            w.grad = r.clone()
        return float(0.5 * (r * r).sum())

    return step


def _reference(kind: str, w0: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """w after `steps` updates, written out from torch.optim's documented algorithms."""
    w, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.01
    for t in range(1, steps + 1):
        g = w - target
        if kind in ("gd", "sgd"):
            w = w - LR * g
            continue
        if kind == "adamw":
            w = w * (1 - LR * wd)  # decoupled weight decay (torch's default 0.01)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        w = w - LR * mh / (vh.sqrt() + eps)
    return w


@pytest.mark.parametrize("kind", loop.OPTIMIZERS)
def test_each_optimizer_kind_matches_its_hand_computed_steps(kind):
    torch.manual_seed(0)
    w0, target = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    out = loop.run(loop.optimizer(kind, [w], LR), _quadratic(w, target), 4)
    ref = _reference(kind, w0, target, 4)
    assert torch.allclose(w.detach(), ref, rtol=1e-13, atol=1e-15), float((w.detach() - ref).abs().max())
    assert out.steps_done == 4 and not out.diverged and len(out.losses) == 5
    assert out.losses[-1] == pytest.approx(float(0.5 * ((ref - target) ** 2).sum()), rel=1e-12)  # the final weights' loss


def test_gd_is_w_minus_lr_g_to_rounding():
    """torch.optim.SGD's update w + (-lr) g against w - lr g: equal up to one rounding per entry."""
    torch.manual_seed(1)
    w0, target = torch.randn(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    loop.run(loop.optimizer("gd", [w], LR), _quadratic(w, target), 1)
    assert torch.allclose(w.detach(), w0 - LR * (w0 - target), rtol=0, atol=4e-16 * float(w0.abs().max()))


def test_an_unknown_optimizer_is_an_input_error_naming_the_key():
    with pytest.raises(InputError, match="train.optimizer"):
        loop.optimizer("lion", [torch.nn.Parameter(torch.zeros(2))], 0.1)


def test_a_given_torch_optimizer_is_used_as_it_is():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.5)
    loop.run(opt, _quadratic(w, torch.zeros(3, dtype=torch.float64)), 2)
    # momentum 0.5: b1 = g0 = 1, w1 = 0.9; g1 = 0.9, b2 = 0.5 + 0.9 = 1.4, w2 = 0.9 - 0.14
    assert torch.allclose(w.detach(), torch.full((3,), 0.76, dtype=torch.float64), rtol=1e-15)


def test_hooks_see_each_steps_gradient_after_backward_and_before_the_update():
    w = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    seen = []

    def hook(t):
        seen.append((t, float(w.grad), float(w.detach())))

    loop.run(loop.optimizer("gd", [w], 0.5), _quadratic(w, torch.zeros(1, dtype=torch.float64)), 3, [hook])
    # w_t = 2 * 0.5^t, the gradient at w_t is w_t: the hook sees both before the step
    assert seen == [(0, 2.0, 2.0), (1, 1.0, 1.0), (2, 0.5, 0.5)]
    assert float(w.detach()) == 0.25


def test_a_non_finite_loss_stops_the_loop_with_its_step():
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))

    def step(t, backward):
        w.grad = torch.ones(1, dtype=torch.float64)
        return math.inf if t == 2 else 1.0

    out = loop.run(loop.optimizer("gd", [w], 0.1), step, 10)
    assert out.diverged and out.steps_done == 2 and "step 2" in out.message and "not finite" in out.message
    assert out.losses[:2] == [1.0, 1.0] and math.isnan(out.losses[2])
    assert float(w.detach()) == pytest.approx(0.8)  # no update after the divergent step


def test_a_step_function_stops_the_loop_by_raising_diverged():
    w = torch.nn.Parameter(torch.zeros(1))

    def step(t, backward):
        if t == 1:
            raise loop.Diverged("diverged at step 1: blown up")
        w.grad = torch.ones(1)
        return 0.0

    out = loop.run(loop.optimizer("gd", [w], 1.0), step, 5)
    assert out == loop.LoopResult([0.0], 1, True, "diverged at step 1: blown up")


def test_problem_step_is_the_equal_weight_mean_of_the_batch_losses_and_its_autograd_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    X, Y = torch.randn(12, 5, dtype=torch.float64), torch.randn(12, 2, dtype=torch.float64)
    batches = [(X[:4], Y[:4]), (X[4:], Y[4:])]  # unequal sizes: each batch weighs 1/2
    mse = lambda out, y: ((out - y) ** 2).mean()  # noqa: E731
    loss = loop.problem_step(Problem("t", model, batches, mse))(0, True)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = 0.5 * (mse(model(X[:4]), Y[:4]) + mse(model(X[4:]), Y[4:]))
    ref.backward()
    assert loss == pytest.approx(float(ref), rel=1e-14)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-13, atol=1e-16)


def test_problem_step_exits_from_the_users_loss_are_input_errors_naming_it():
    model = torch.nn.Linear(2, 1)

    def loss(out, y):
        raise SystemExit(0)

    step = loop.problem_step(Problem("mine.py:build", model, [(torch.zeros(3, 2), torch.zeros(3, 1))], loss))
    with pytest.raises(InputError, match="mine.py:build: the loss raised SystemExit"):
        step(0, True)
