"""The gradient monitor inside Hugging Face's Trainer (docs/watch.md).

    trainer = Trainer(model, args, train_dataset=..., callbacks=[GradrankCallback(out=DIR, every=K)])

on_train_begin starts gradrank.watch on the Trainer's model (arming step 0); on_pre_optimizer_step,
which the Trainer calls after the step's backwards (all its gradient-accumulation micro-batches) and
before optimizer.step(), is mon.step(); on_train_end closes the run directory. The Trainer clips
gradients before on_pre_optimizer_step: with clipping active (max_grad_norm > 0, the default 1.0) a
clipped step's .grad is no longer the loss gradient the factors hold, and its layers are skipped with
that reason; set max_grad_norm=0 to monitor every step.
"""

from __future__ import annotations

from transformers import TrainerCallback

from gradrank.errors import InputError
from gradrank.monitor import Monitor, watch


class GradrankCallback(TrainerCallback):
    """A transformers.TrainerCallback recording every `every`-th optimiser step (gradrank.watch's options)."""

    def __init__(self, out, every: int = 50, layers=None, topk: int = 8):
        self.out, self.every, self.layers, self.topk = out, every, layers, topk
        self.monitor: Monitor | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise InputError("GradrankCallback: the Trainer passed no model to on_train_begin")
        self.monitor = watch(model, out=self.out, every=self.every, layers=self.layers, topk=self.topk)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.monitor.step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
