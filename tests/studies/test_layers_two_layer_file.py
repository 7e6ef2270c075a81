"""`gradrank layers` on a user's two-layer model file equals `gradrank decompose` on the same X, y, W, a
(docs/deep.md): the captured factors go through the same engine and the same spike rule as the closed
form of arXiv 2510.01303 (Prop. 2.1), so every term and value agrees to rounding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from gradrank.cli.app import app

MODEL = """
import math
import numpy as np
import torch

DATA, WEIGHTS = {data!r}, {weights!r}


class TwoLayer(torch.nn.Module):
    def __init__(self, W, a):
        super().__init__()
        self.hidden = torch.nn.Linear(W.shape[1], W.shape[0], bias=False, dtype=torch.float64)
        self.a = torch.nn.Parameter(torch.as_tensor(a), requires_grad=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.as_tensor(W))

    def forward(self, x):  # f = gamma_m a^T tanh(W x), gamma_m = 1/sqrt(m) (NTK scaling, c = 1)
        return torch.tanh(self.hidden(x)) @ self.a / math.sqrt(self.a.numel())


def build(cfg):
    data, w = np.load(DATA), np.load(WEIGHTS)
    X, y = torch.as_tensor(data["X"]), torch.as_tensor(data["y"])
    return {{"model": TwoLayer(w["W"], w["a"]), "inputs": X, "targets": y, "loss": lambda f, t: 0.5 * ((f - t) ** 2).mean()}}
"""


def test_layers_on_a_two_layer_file_equals_decompose_to_1e_10(tmp_path):
    """Same X (centred), y, W, a, tanh, MSE, the empirical mu: the hidden layer's norms, shares, singular
    values and alignments from `gradrank layers --model file.py:build` equal `gradrank decompose`'s."""
    rng = np.random.default_rng(0)
    n, d, m = 60, 40, 50
    q = rng.standard_normal(d)
    X = rng.standard_normal((n, d)) / math.sqrt(d) + 1.5 * np.outer(rng.standard_normal(n), q / np.linalg.norm(q))
    X -= X.mean(0)
    y = np.tanh(X @ rng.standard_normal(d))
    W = rng.standard_normal((m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = np.sign(rng.standard_normal(m))
    np.savez(tmp_path / "data.npz", X=X, y=y)
    np.savez(tmp_path / "weights.npz", W=W, a=a)
    (tmp_path / "two.py").write_text(MODEL.format(data=str(tmp_path / "data.npz"), weights=str(tmp_path / "weights.npz")))
    sets = ["--set", "model.activation=tanh", "--set", "analysis.mu=empirical", "-q"]
    runner = CliRunner()
    res = runner.invoke(
        app, ["layers", "--model", f"{tmp_path / 'two.py'}:build", *sets, "--no-report", "-o", str(tmp_path / "layers")]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "decompose",
            "--data",
            str(tmp_path / "data.npz"),
            "--weights",
            str(tmp_path / "weights.npz"),
            *sets,
            "-o",
            str(tmp_path / "dec"),
        ],
    )
    assert res.exit_code == 0, res.output
    layer = json.loads((tmp_path / "layers" / "layers.json").read_text())["layers"][0]
    metrics = json.loads((tmp_path / "dec" / "metrics.json").read_text())
    assert (layer["name"], layer["form"], layer["spike"]["source"]) == ("hidden", "residue", "principal")
    assert layer["spike"]["zeta"] == pytest.approx(metrics["data"]["zeta"], rel=1e-10)
    scale = metrics["norms"]["G"]
    for group in ("norms", "shares"):
        for k in ("S1", "S12", "S2", "E"):
            assert layer[group][k] == pytest.approx(metrics[group][k], rel=1e-10, abs=1e-12 * scale), (group, k)
    assert layer["norms"]["G"] == pytest.approx(scale, rel=1e-10)
    assert layer["singular_values"] == pytest.approx(metrics["singular_values"], rel=1e-10, abs=1e-12 * scale)
    for k in ("residue", "spike"):
        assert layer["alignment"][k] == pytest.approx(metrics["alignment"][k], abs=1e-10), k
    assert (layer["outliers"], layer["regime"]) == (metrics["rank"]["outliers"], metrics["regime"])
