"""GradrankCallback inside transformers' Trainer, offline: a tiny BERT built from a local config."""

import accelerate  # noqa: F401  (the Trainer needs it; the test extra installs gradrank[hf])
import pytest
import torch
import transformers

import gradrank
from gradrank.integrations.hf import GradrankCallback


class _Grads(transformers.TrainerCallback):
    """Keeps every linear weight's .grad (d_in x d_out) at each step, after GradrankCallback saw it."""

    def __init__(self):
        self.grads = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads[state.global_step] = {
            n: m.weight.grad.detach().T.clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
        }


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=16, length=10, vocab=50):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def test_trainer_callback_records_every_kth_step_and_its_norms_equal_the_grads(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    model = transformers.BertForSequenceClassification(cfg)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=0.0,  # clipping rescales .grad before on_pre_optimizer_step (docs/watch.md)
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    grads = _Grads()
    cb = GradrankCallback(out=tmp_path / "w", every=2)
    transformers.Trainer(model=model, args=args, train_dataset=_Pairs(), callbacks=[cb, grads]).train()
    rec = gradrank.load(tmp_path / "w")
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert rec.finished and rec.steps == [0, 2] and not rec.skipped
    assert [(r.step, r.layer) for r in rec.rows] == [(s, n) for s in (0, 2) for n in linear]
    for r in rec.rows:
        G = grads.grads[r.step][r.layer].double()
        per_sample = 1 if r.layer in ("bert.pooler.dense", "classifier") else 10  # the [CLS] token, else every token
        assert r.rows == 2 * 4 * per_sample  # two micro-batches of 4 samples
        assert r.fro_G == pytest.approx(float(G.norm()), rel=1e-5)
        assert r.norm_G == pytest.approx(float(torch.linalg.svdvals(G)[0]), rel=1e-5)
