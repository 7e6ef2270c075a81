"""The real pretrained transformer, offline: all-MiniLM-L6-v2 from its wheel with the network
blocked, two of its layers checked against autograd (a few short sentences, a few seconds)."""

from __future__ import annotations

import socket

import pytest
import torch

from gradrank import config
from gradrank.models import capture as capture_mod
from gradrank.models import minilm
from gradrank.models import registry as spec
from gradrank.studies import layers as layers_mod

TWO = ["encoder.layer.0.attention.self.query", "encoder.layer.5.output.dense"]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test; the hub client is told it is offline."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_minilm_offline_two_layers_against_autograd(no_network):
    cfg = config.load(sets=["layers.sentences=6", "layers.max_length=10", 'layers.model="minilm"'])
    st = minilm.load()
    problem = minilm.problem(cfg, st)
    model = problem.model
    assert len(spec.linear_layers(model, problem.layers)) == 36  # 6 blocks x 6; the pooler gets no gradient
    assert "pooler.dense" in spec.linear_layers(model)
    ((inputs, mask),) = problem.batches
    # the model analysed is the SentenceTransformer's own: the loss's pooling gives its embeddings
    with torch.no_grad():
        mine = minilm.mean_pool(spec.forward(problem, inputs).last_hidden_state, mask)
        ref = st(dict(inputs))["sentence_embedding"]
    assert mine.shape == (6, 384) and torch.allclose(mine, ref, atol=1e-5)
    # autograd's weight gradients, by a plain backward pass
    model.zero_grad(set_to_none=True)
    problem.loss(spec.forward(problem, inputs), mask).backward()
    mods = dict(model.named_modules())
    layers = spec.linear_layers(model, TWO)
    cap = capture_mod.capture(problem, layers)
    res = layers_mod.analyze_capture(cap, cfg, problem)
    assert [r.name for r in res.layers] == TWO
    real_tokens = int(mask.sum())
    for r in res.layers:
        G = mods[r.name].weight.grad.T
        f = cap.layers[r.name]
        assert f.rows == r.rows == real_tokens and f.H.dtype == torch.float32  # padding rows dropped
        assert float((f.gradient() - G).norm()) <= 1e-5 * float(G.norm()), r.name
        assert r.form == "general" and r.identity_error < 1e-5, (r.name, r.identity_error)
        s = torch.linalg.svdvals(G.double())
        mine_s = torch.as_tensor(res.arrays[f"{r.name}/G"], dtype=torch.float64)[: s.numel()]
        # the Gram route's documented accuracy: sqrt(eps) s_1 normwise (float32), relative for the top values
        assert torch.allclose(mine_s, s, rtol=0, atol=2 * torch.finfo(torch.float32).eps ** 0.5 * float(s[0])), r.name
        assert torch.allclose(mine_s[:4], s[:4], rtol=1e-5, atol=0), r.name


def test_sentence_pairs_are_real_prose():
    pairs = minilm.sentence_pairs(40, 0)
    assert len(set(pairs)) == 40 and pairs != minilm.sentence_pairs(40, 1)
    assert all(len(a.split()) >= 4 and len(b.split()) >= 4 and "|" not in a + b for a, b in pairs)
    from gradrank.errors import InputError

    with pytest.raises(InputError, match="layers.sentences"):
        minilm.sentence_pairs(100000, 0)
