"""`gradrank train` in the one loop: a torch.optim optimiser given through the API trains W exactly
as train.optimizer's own does, and AdamW takes lr as given."""

from __future__ import annotations

import pytest
import torch

import gradrank
from gradrank.studies import train as training

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"data.n": 40, "data.d": 30, "model.width": 50, "train.steps": 3, "train.record_every": 3, "train.checkpoint_every": 3}


def test_a_given_optimizer_trains_w_as_train_optimizers_own():
    own = gradrank.train(overrides=SMALL)
    lr = own.info.lr_effective
    given = gradrank.train(overrides=SMALL, optimizer=lambda params: torch.optim.SGD(params, lr=lr))
    assert torch.equal(given.W, own.W) and torch.equal(given.a, own.a)
    other = gradrank.train(overrides=SMALL, optimizer=lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9))
    assert not torch.equal(other.W, own.W)  # the given optimiser is the one used


def test_adamw_is_torch_adamw_on_the_minibatches_and_takes_lr_as_given(small_cfg):
    cfg = small_cfg("train.optimizer=adamw", "model.scaling=mf", "train.steps=2", "train.batch_size=16")
    assert training.lr_multiplier(cfg, 100, "adamw") == 1.0
    tr = training.train(cfg)
    ref = training.train(
        cfg.replace(**{"train.optimizer": "adam"}),
        optimizer=lambda params: torch.optim.AdamW(params, lr=cfg.train.lr, betas=(0.9, 0.999), eps=1e-8),
    )
    assert torch.equal(tr.W, ref.W) and not tr.diverged
