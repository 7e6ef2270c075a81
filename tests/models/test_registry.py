"""The model SPEC seam: built-in models, the user's file, linear layers, the one forward."""

from __future__ import annotations

import pytest
import torch

from gradrank import config
from gradrank.data import spiked as data
from gradrank.errors import InputError
from gradrank.models import mlp
from gradrank.models import registry as spec
from gradrank.models import twolayer as network


def _cfg(*sets):
    return config.load(sets=["data.n=40", "data.d=30", "model.width=50", *sets])


def test_depth_two_mlp_is_the_papers_network():
    cfg = _cfg("model.activation=tanh", "model.planted=1.5", "model.scaling=mf")
    p = spec.resolve("mlp", cfg)
    ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
    net = network.init(cfg.model, cfg.seed, ds)
    f = spec.forward(p, p.batches[0][0])
    assert list(spec.linear_layers(p.model)) == ["layers.0", "readout"]
    assert torch.allclose(f, net.forward(ds.X), rtol=0, atol=1e-13)
    assert torch.equal(p.spike.q, ds.q) and p.spike.zeta == ds.zeta
    assert f.dtype == torch.float64


def test_mlp_depth_widths_batches_and_dtype():
    cfg = _cfg("model.depth=4", "model.hidden=[20, 30, 10]", "layers.batch_size=15", "compute.dtype=float32")
    p = spec.resolve("mlp", cfg)
    shapes = [tuple(m.weight.shape) for m in spec.linear_layers(p.model).values()]
    assert shapes == [(20, 30), (30, 20), (10, 30), (1, 10)]
    assert [b[0].shape[0] for b in p.batches] == [15, 15, 10]
    assert p.batches[0][0].dtype == torch.float32 and p.model.readout.weight.dtype == torch.float32
    # hidden rows on the unit sphere (gain 1), readout +-1
    assert torch.allclose(p.model.layers[1].weight.norm(dim=1), torch.ones(30))
    assert set(p.model.readout.weight.flatten().tolist()) <= {-1.0, 1.0}
    with pytest.raises(InputError, match="model.hidden"):
        mlp.widths(_cfg("model.depth=3", "model.hidden=[4]"))


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(3, 3)
        self.block = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        self.alias = self.a  # the same module under a second name

    def forward(self, x):
        return self.block(self.a(self.a(x)))[:, 0]


def test_linear_layers_order_patterns_and_conv1d():
    from transformers.pytorch_utils import Conv1D

    model = Tied()
    assert list(spec.linear_layers(model)) == ["a", "block.0", "block.2"]
    assert list(spec.linear_layers(model, ["block.*"])) == ["block.0", "block.2"]
    with pytest.raises(InputError, match="'nope\\*' matches no linear layer"):
        spec.linear_layers(model, ["block.*", "nope*"])
    with pytest.raises(InputError, match="no linear layer"):
        spec.linear_layers(torch.nn.Sequential(torch.nn.ReLU()))
    seq = torch.nn.Sequential(Conv1D(4, 3), torch.nn.Conv1d(2, 2, 1))
    layers = spec.linear_layers(seq)
    assert list(layers) == ["0"] and spec.is_conv1d(layers["0"])


def test_forward_calls_by_input_kind():
    class Two(torch.nn.Module):
        def forward(self, x, y=None):
            return x if y is None else x + y

    p = spec.Problem("t", Two(), [], lambda o, t: o.sum())
    one, two = torch.ones(2), 2 * torch.ones(2)
    assert torch.equal(spec.forward(p, one), one)
    assert torch.equal(spec.forward(p, (one, two)), 3 * one)
    assert torch.equal(spec.forward(p, {"x": one, "y": two}), 3 * one)


GOOD = """
import torch
def build(cfg):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    x = torch.randn(9, 5)
    assert cfg.data.n == 40
    return {"model": model, "inputs": x, "targets": torch.zeros(9, 1), "loss": lambda o, t: ((o - t) ** 2).mean(), "layers": ["0"]}
def nothing():
    return {"model": torch.nn.Linear(2, 1), "batches": [(torch.ones(3, 2), torch.ones(3)), (torch.ones(2, 2), torch.ones(2))],
            "loss": lambda o, t: o.sum()}
def raises(cfg):
    raise RuntimeError("boom\\nsecond line")
def missing(cfg):
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(1, 2)}
def not_dict():
    return [1]
def bad_model():
    return {"model": 3, "inputs": torch.ones(1, 2), "targets": None, "loss": len}
def extra():
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(1, 2), "targets": None, "loss": len, "lyers": ["x"]}
def bad_inputs():
    return {"model": torch.nn.Linear(2, 1), "inputs": "text", "targets": None, "loss": len}
"""


def test_user_file_resolves_with_config_or_nothing(tmp_path):
    f = tmp_path / "user.py"
    f.write_text(GOOD)
    p = spec.resolve(f"{f}:build", _cfg())
    assert p.layers == ["0"] and len(p.source_sha256) == 64 and p.name == f"{f}:build"
    assert tuple(spec.forward(p, p.batches[0][0]).shape) == (9, 1)
    q = spec.resolve(f"{f}:nothing", _cfg())
    assert [b[0].shape[0] for b in q.batches] == [3, 2] and q.layers is None


@pytest.mark.parametrize(
    "suffix, message",
    [
        (":raises", "raises\\(\\) raised RuntimeError: boom second line"),
        (":missing", "lacks 'loss', 'targets'"),
        (":not_dict", "must return a dict, got list"),
        (":bad_model", "'model' must be a torch.nn.Module"),
        (":extra", "unknown keys 'lyers'"),
        (":bad_inputs", "'inputs' must be a Tensor"),
        (":absent", "has no function absent"),
        (":1x", "not twolayer, mlp, minilm"),
        ("", "not twolayer, mlp, minilm"),
    ],
)
def test_user_file_misuse_is_one_line(tmp_path, suffix, message):
    f = tmp_path / "user.py"
    f.write_text(GOOD)
    with pytest.raises(InputError, match=message) as info:
        spec.resolve(f"{f}{suffix}", _cfg())
    assert "\n" not in str(info.value)


def test_unresolvable_files(tmp_path):
    with pytest.raises(InputError, match="no such model file"):
        spec.resolve(f"{tmp_path}/none.py:f", _cfg())
    (tmp_path / "bad.py").write_text("def f(:\n")
    with pytest.raises(InputError, match="importing .* raised SyntaxError"):
        spec.resolve(f"{tmp_path}/bad.py:f", _cfg())
    (tmp_path / "m.txt").write_text("")
    with pytest.raises(InputError, match="not a .py file"):
        spec.resolve(f"{tmp_path}/m.txt:f", _cfg())
    with pytest.raises(InputError, match="empty SPEC"):
        spec.resolve(" ", _cfg())
