"""User models the capture must not misread: a frozen Linear is skipped for being frozen, a
parametrised Linear (weight_norm) is analysed as the gradient of its effective weight, checked
against autograd; half-precision, complex, non-finite models are exit 2 naming the model."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrizations
from typer.testing import CliRunner

import gradrank
from gradrank.cli.app import app
from gradrank.models import capture as capture_mod
from gradrank.models.registry import from_dict, linear_layers


def _net(dtype=torch.float64) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1), torch.nn.Flatten(0)
    ).to(dtype)


def _data(dtype=torch.float64, n=30):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 5, generator=g, dtype=torch.float64).to(dtype), torch.randn(n, generator=g, dtype=torch.float64).to(
        dtype
    )


def _mse(o, t):
    return ((o - t) ** 2).mean()


def _effective_weight_gradients(model: torch.nn.Sequential, x, y) -> dict[str, torch.Tensor]:
    """Autograd's gradient of each Linear's effective weight (d_in x d_out): a plain copy of the model,
    every weight a leaf holding the effective weight's value."""
    plain = torch.nn.Sequential(
        *[torch.nn.Linear(m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else m for m in model]
    ).double()
    with torch.no_grad():
        for mine, theirs in zip(plain, model):
            if isinstance(mine, torch.nn.Linear):
                mine.weight.copy_(theirs.weight), mine.bias.copy_(theirs.bias)
    _mse(plain(x), y).backward()
    return {str(i): m.weight.grad.T for i, m in enumerate(plain) if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("which", ["2", "0"])
def test_a_frozen_linear_is_skipped_as_frozen_not_as_a_layer_the_loss_ignores(which):
    model = _net()
    model[int(which)].requires_grad_(False)  # weight and bias frozen
    x, y = _data()
    res = gradrank.layers(model, x, y, _mse)
    assert which not in [r.name for r in res.layers]
    assert "frozen" in res.skipped[which] and "does not affect the loss" not in res.skipped[which]
    reference = _effective_weight_gradients(model, x, y)
    for r in res.layers:  # the trainable layers are still autograd's gradient
        assert r.norms["G"] == pytest.approx(float(torch.linalg.matrix_norm(reference[r.name], 2)), rel=1e-12)


def test_a_model_whose_every_chosen_layer_is_frozen_is_an_input_error_naming_it():
    model = _net().requires_grad_(False)
    model[4].bias.requires_grad_(True)  # the loss still has a gradient, no weight has
    x, y = _data()
    with pytest.raises(gradrank.InputError, match="--model api: every chosen linear layer is frozen"):
        gradrank.layers(model, x, y, _mse)


@pytest.mark.parametrize("param", ["parametrizations", "legacy"])
def test_a_weight_norm_linear_is_analysed_as_the_gradient_of_its_effective_weight(param):
    model = _net()
    if param == "parametrizations":
        parametrizations.weight_norm(model[2])
    else:
        with pytest.warns(FutureWarning):
            torch.nn.utils.weight_norm(model[2])
    x, y = _data()
    problem = from_dict({"model": model, "inputs": x, "targets": y, "loss": _mse}, "wn")
    cap = capture_mod.capture(problem, linear_layers(model))
    assert sorted(cap.layers) == ["0", "2", "4"] and not cap.skipped
    reference = _effective_weight_gradients(model, x, y)
    for name, f in cap.layers.items():
        torch.testing.assert_close(f.gradient(), reference[name], rtol=1e-12, atol=1e-15)
        assert f.autograd_error < 1e-12  # checked against autograd's gradient of the effective weight during the capture


CASES = {
    "float16": "model = model.half(); x, y = x.half(), y.half()",
    "bfloat16": "model = model.bfloat16(); x, y = x.bfloat16(), y.bfloat16()",
    "complex-weights": "model = model.to(torch.complex128); x, y = x.to(torch.complex128), y.to(torch.complex128)",
    "complex-loss": "loss = lambda o, t: ((o - t) ** 2).mean() * (1 + 0j)",
    "inf-weight": "model[2].weight.data[0, 0] = float('inf')",
    "nan-gradient": "model[1] = SqrtAbs()",
}
MESSAGES = {
    "float16": "layer '0' has float16 weights",
    "bfloat16": "layer '0' has bfloat16 weights",
    "complex-weights": "parameter '0.weight' is complex",
    "complex-loss": "the loss is complex",
    "inf-weight": "parameter '2.weight' holds inf or NaN",
    "nan-gradient": "the gradient of layer '0' holds NaN or inf under a finite loss",
}
USER = """
import torch

class SqrtAbs(torch.nn.Module):  # sqrt(|h|) - sqrt(|h|) + h: the value h, the derivative NaN where h = 0
    def forward(self, h):
        h = torch.cat([h[:, :1] * 0, h[:, 1:]], 1)
        return torch.sqrt(h.abs()) - torch.sqrt(h.abs()) + torch.tanh(h)

def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1), torch.nn.Flatten(0)
    ).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randn(30, dtype=torch.float64)
    loss = lambda o, t: ((o - t) ** 2).mean()
    {case}
    return {{"model": model, "inputs": x, "targets": y, "loss": loss}}
"""


@pytest.mark.parametrize("case", list(CASES))
def test_a_model_gradrank_cannot_analyse_is_an_input_error_naming_it_in_the_api(case):
    namespace: dict = {}
    exec(USER.format(case=CASES[case]), namespace)  # noqa: S102 - the test's own model file
    given = namespace["build"]()
    assert torch.isfinite(given["loss"](given["model"](given["inputs"]), given["targets"]).abs()).all()  # the loss is finite
    with pytest.raises(gradrank.InputError, match=f"--model api: {MESSAGES[case]}".replace("(", r"\(")):
        gradrank.layers(given["model"], given["inputs"], given["targets"], given["loss"])


@pytest.mark.parametrize("case", list(CASES))
def test_a_model_gradrank_cannot_analyse_is_exit_2_naming_the_model_file_and_nothing_is_written(tmp_path, case):
    model = tmp_path / "user_model.py"
    model.write_text(USER.format(case=CASES[case]))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["layers", "--model", f"{model}:build", "-o", str(out)])
    assert res.exit_code == 2, res.output
    error = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and f"user_model.py:build: {MESSAGES[case]}" in error[0], res.output
    assert not out.exists()


ADVISE_MODELS = """
import torch

def _problem(m):
    dtype = next(m.parameters()).dtype
    x = torch.randn(8, 3).to(dtype)
    return {"model": m, "inputs": x, "targets": torch.zeros(8).to(dtype), "loss": lambda o, t: ((o[:, 0] - t) ** 2).mean()}

def half():
    torch.manual_seed(0)
    return _problem(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).half())

def inf_weight():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        m[0].weight[0, 0] = float("inf")
    return _problem(m)
"""


@pytest.mark.parametrize("fn, message", [("half", "float16 weights"), ("inf_weight", "holds inf or NaN")])
def test_advise_refuses_the_models_layers_refuses(tmp_path, fn, message):
    from typer.testing import CliRunner

    from gradrank.cli.app import app

    f = tmp_path / "models.py"
    f.write_text(ADVISE_MODELS)
    for command in ("layers", "advise"):
        extra = ["--set", "train.steps=2", "--set", "advise.validate=false"] if command == "advise" else []
        res = CliRunner().invoke(app, [command, "--model", f"{f}:{fn}", *extra, "-o", str(tmp_path / command)])
        assert res.exit_code == 2 and message in res.output, (command, res.output)
        assert not (tmp_path / command).exists()
