"""The one training loop: steps of a torch.optim optimiser over a model's parameters (docs/training.md).

Every training in gradrank runs here: `gradrank train` (the two-layer network, its closed-form
gradient, Prop. 2.1 of arXiv 2510.01303), the advisor's recording and validation runs (any SPEC's
model, autograd) and `gradrank onestep`'s full-batch steps. A step is

    zero_grad -> loss = step_fn(t, backward=True) (fills .grad) -> hooks(t) -> optimizer.step()

for t = 0 .. steps - 1, then one last step_fn(steps, backward=False) for the loss at the final
weights. `step_fn` owns the batches and the gradient (autograd through the user's code, or a
closed form), so full-batch and mini-batch training share this loop; hooks see the step's
gradients in .grad before the update (the advisor's recorder, the training monitor).

Divergence stops the loop with a message: a non-finite loss, or a `Diverged` raised by step_fn
(e.g. a gradient beyond the dtype's range). The parameters are then those of the last step taken.

Optimisers (train.optimizer): gd = torch.optim.SGD without momentum, full batch; sgd = the same
update on mini-batches; adam = torch.optim.Adam (betas 0.9, 0.999, eps 1e-8); adamw =
torch.optim.AdamW (eps 1e-8, weight_decay 0.01, torch's default); or any torch.optim.Optimizer
the Python API is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import torch

from gradrank.errors import InputError
from gradrank.models.registry import backward as user_backward
from gradrank.models.registry import forward

OPTIMIZERS = ("gd", "sgd", "adam", "adamw")

StepFn = Callable[[int, bool], float]  # (t, backward) -> the loss at the current weights; .grad filled when backward
Hook = Callable[[int], None]  # called with the step index after backward, before optimizer.step()


class Diverged(Exception):
    """Raised by a step function to stop the loop: its message says at which step and why."""


def optimizer(kind: str, params: Iterable, lr: float) -> torch.optim.Optimizer:
    """The torch.optim optimiser train.optimizer names, on params (tensors or param groups) at step size lr."""
    if kind in ("gd", "sgd"):  # w <- w - lr g (gd and sgd differ in their batches, not in the update)
        return torch.optim.SGD(params, lr=lr, momentum=0.0)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    raise InputError(f"config key 'train.optimizer' = {kind!r}: not one of {', '.join(OPTIMIZERS)}")


@dataclass
class LoopResult:
    """The loss at every visited weight (t = 0 .. steps_done; a non-finite last one as NaN) and how it ended."""

    losses: list[float] = field(default_factory=list)
    steps_done: int = 0  # updates taken
    diverged: bool = False
    message: str = ""


def run(
    optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    step_fn: StepFn,
    steps: int,
    hooks: Sequence[Hook] = (),
) -> LoopResult:
    """`steps` updates of every optimiser in `optimizers` (each owning its parameters) from step_fn's gradients."""
    opts = [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)
    out = LoopResult()
    for t in range(steps + 1):
        backward = t < steps
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        try:
            loss = float(step_fn(t, backward))
        except Diverged as exc:
            out.diverged, out.message = True, str(exc)
            return out
        if not math.isfinite(loss):
            out.losses.append(math.nan)
            out.diverged, out.message = True, f"diverged at step {t}: the loss is not finite; lower train.lr"
            return out
        out.losses.append(loss)
        if not backward:
            break
        for hook in hooks:
            hook(t)
        for opt in opts:
            opt.step()
        out.steps_done = t + 1
    return out


def problem_step(problem, model: torch.nn.Module | None = None) -> StepFn:
    """step_fn for a SPEC's Problem (gradrank.models.registry): the full-batch loss, the mean of the
    batch losses (batches of equal weight), its gradient by autograd. The forward pass, the loss and
    the backward pass are the user's code and go through the registry's user_call. `model` replaces
    the problem's own (a copy being trained), called exactly as the problem's."""
    if model is not None:
        problem = replace(problem, model=model)

    def step(t: int, backward: bool) -> float:
        total = 0.0
        for inputs, targets in problem.batches:
            loss = problem.loss(forward(problem, inputs), targets) / len(problem.batches)
            if backward:
                user_backward(problem, loss.backward)
            total += float(loss.detach())
        return total

    return step
