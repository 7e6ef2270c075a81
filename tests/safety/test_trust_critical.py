"""The trust rules user code cannot break: no gradrank process imports from the working directory;
whatever a user's function, forward, loss or backward raises or exits with is exit 2 naming where
(InputError in the API), nothing written; a captured layer gradient that autograd contradicts is
never reported as that layer's gradient."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _reliability import record
from typer.testing import CliRunner

import gradrank
from gradrank.cli.app import app
from gradrank.models import capture as capture_mod
from gradrank.models.registry import from_dict, linear_layers
from gradrank.sweeps.executors import isolated_children

TINY = ["--set", "data.n=40", "--set", "data.d=30", "--set", "model.width=50"]
TRAPS = ("json", "multiprocessing", "numpy", "torch", "gradrank", "distributed", "submitit", "typing_extensions", "pickle")


def _console_script() -> str:
    found = shutil.which("gradrank", path=str(Path(sys.executable).parent)) or shutil.which("gradrank")
    assert found, "the gradrank console script is not installed (pip install .)"
    return found


# ---------------------------------------------------------------------------- 1. nothing from the working directory


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", *TINY, "-o", "run"],  # with its report
        ["layers", "--model", "mlp", *TINY, "--set", "model.depth=3", "-o", "run"],
        ["sweep", "--grid", "seed=0,1", *TINY, "--executor", "local", "--jobs", "2", "-o", "run"],
        ["sweep", "--grid", "seed=0,1", *TINY, "--executor", "dask", "--jobs", "1", "-o", "run"],
    ],
    ids=["analyze", "layers", "sweep-local", "sweep-dask"],
)
def test_no_gradrank_process_imports_a_module_from_the_working_directory(tmp_path, args):
    for name in TRAPS:  # each module, if ever imported from here, leaves a file behind
        (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / ('PWNED-' + name))!r}, 'w').write('x')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    res = subprocess.run([_console_script(), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.glob("PWNED-*")) == []
    assert (tmp_path / "run").is_dir()
    record("helper processes", f"gradrank {args[0]} {' '.join(args[-4:-2])} beside {len(TRAPS)} trap modules", "none imported")


def test_isolated_children_sets_safe_path_and_restores_the_callers_environment(monkeypatch):
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    with isolated_children():
        assert os.environ["PYTHONSAFEPATH"] == "1"
        out = subprocess.run([sys.executable, "-c", "import sys; print(sys.flags.safe_path)"], capture_output=True, text=True)
        assert out.stdout.strip() == "True"
    assert "PYTHONSAFEPATH" not in os.environ
    monkeypatch.setenv("PYTHONSAFEPATH", "x")
    with isolated_children():
        pass
    assert os.environ["PYTHONSAFEPATH"] == "x"


# ---------------------------------------------------------------------------- 2. a user's exit is never success

USER = """
import sys
import torch

class Odd(BaseException):
    pass

def _stop(how):
    if how == "exit0":
        sys.exit(0)
    if how == "exitNone":
        sys.exit()
    if how == "exit3":
        raise SystemExit(3)
    raise Odd("a BaseException of the user's")

HOW = {how!r}
WHERE = {where!r}
if WHERE == "import":
    _stop(HOW)

class Stop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        _stop(HOW)

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.out = torch.nn.Linear(4, 1)

    def forward(self, x):
        if WHERE == "forward":
            _stop(HOW)
        h = torch.tanh(self.fc(x))
        return self.out(Stop.apply(h) if WHERE == "backward" else h)[:, 0]

def loss(o, t):
    if WHERE == "loss":
        _stop(HOW)
    return ((o - t) ** 2).mean()

def build():
    if WHERE == "function":
        _stop(HOW)
    torch.manual_seed(0)
    return {{"model": Net(), "inputs": torch.randn(8, 3), "targets": torch.zeros(8), "loss": loss}}
"""

WHERE = {"import": "importing", "function": "build()", "forward": "the forward pass", "loss": "the loss", "backward": "backward"}
HOWS = ("exit0", "exitNone", "exit3", "base")


@pytest.mark.parametrize("command", ["layers", "advise"])
@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("how", HOWS)
def test_an_exit_or_base_exception_in_user_code_is_exit_2_naming_where_and_nothing_is_written(tmp_path, command, where, how):
    model = tmp_path / "user_model.py"
    model.write_text(USER.format(how=how, where=where))
    out = tmp_path / "out"
    extra = ["--set", "train.steps=2", "--set", "advise.validate=false"] if command == "advise" else []
    res = CliRunner().invoke(app, [command, "--model", f"{model}:build", *extra, "-o", str(out)])
    assert res.exit_code == 2, res.output
    error = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and WHERE[where] in error[0], res.output
    assert ("SystemExit" in error[0]) == (how != "base") and ("Odd" in error[0]) == (how == "base")
    assert not out.exists()
    record("user code", f"{command}: {how} in the model file's {where}", "exit 2 naming where, nothing written")


@pytest.mark.parametrize("where", ["forward", "loss", "backward"])
def test_the_api_raises_input_error_when_user_code_exits(tmp_path, where):
    namespace: dict = {}
    exec(USER.format(how="exit0", where=where), namespace)  # noqa: S102 - the test's own model file
    given = namespace["build"]()
    with pytest.raises(gradrank.InputError, match=WHERE[where]):
        gradrank.layers(given["model"], given["inputs"], given["targets"], given["loss"])
    record("user code", f"API layers: sys.exit(0) in the {where}", "InputError naming where")


# ---------------------------------------------------------------------------- 3. captured gradients checked against autograd


class Scaled(torch.nn.Linear):
    """A Linear whose forward is not input @ W^T + b: hooks see x, the weight sees 2x."""

    def forward(self, x):
        return F.linear(2 * x, self.weight, self.bias)


class KeywordNet(torch.nn.Module):
    def __init__(self, last: type = torch.nn.Linear):
        super().__init__()
        self.fc = torch.nn.Linear(5, 6)
        self.mid = torch.nn.Linear(6, 7)
        self.out = last(7, 1)

    def forward(self, x):
        h = torch.tanh(self.fc(input=x))  # a keyword call is valid PyTorch
        return self.out(torch.tanh(self.mid(h)))[:, 0]


def _problem(model: torch.nn.Module, n: int = 30):
    torch.manual_seed(1)
    x, y = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    return from_dict({"model": model.double(), "inputs": x, "targets": y, "loss": lambda o, t: ((o - t) ** 2).mean()}, "t")


def _autograd(problem) -> dict[str, torch.Tensor]:
    problem.model.zero_grad()
    inputs, targets = problem.batches[0]
    problem.loss(problem.model(inputs), targets).backward()
    return {n: m.weight.grad.T.clone() for n, m in problem.model.named_modules() if isinstance(m, torch.nn.Linear)}


def test_a_keyword_called_linear_is_captured_and_its_factors_equal_autograds_gradient():
    torch.manual_seed(0)
    problem = _problem(KeywordNet())
    reference = _autograd(problem)
    cap = capture_mod.capture(problem, linear_layers(problem.model))
    assert sorted(cap.layers) == ["fc", "mid", "out"] and not cap.skipped
    for name, f in cap.layers.items():
        torch.testing.assert_close(f.gradient(), reference[name], rtol=1e-12, atol=1e-14)
        assert f.autograd_error < 1e-12
    record("captured gradients", "a Linear called by keyword (self.fc(input=x))", "captured, equal to autograd's to 1e-12")


def test_a_layer_whose_forward_is_not_linear_in_its_input_is_skipped_never_reported_with_wrong_numbers(tmp_path):
    torch.manual_seed(0)
    problem = _problem(KeywordNet(last=Scaled))
    res = gradrank.layers(problem.model, *problem.batches[0], problem.loss)
    assert [r.name for r in res.layers] == ["fc", "mid"]
    assert "disagree with autograd" in res.skipped["out"]
    record("captured gradients", "a Linear whose forward scales its input (F.linear(2x, W, b))", "skipped with the reason")
    reference = _autograd(problem)
    for r in res.layers:  # the layers kept are autograd's gradient
        assert abs(r.norms["G"] - float(torch.linalg.matrix_norm(reference[r.name], 2))) < 1e-12 * r.norms["G"]
        assert r.autograd_error < 1e-12


def test_probe_error_measures_the_relative_disagreement_on_random_probes():
    gen = torch.Generator().manual_seed(3)
    H, D = torch.randn(9, 4, generator=gen, dtype=torch.float64), torch.randn(9, 6, generator=gen, dtype=torch.float64)
    G = H.T @ D
    assert capture_mod.probe_error([H], [D], G) < 1e-15
    assert capture_mod.probe_error([H[:5], H[5:]], [D[:5], D[5:]], G) < 1e-15  # several calls sum
    assert abs(capture_mod.probe_error([H], [D], 2 * G) - 0.5) < 1e-12  # the factors hold half of autograd's gradient
    assert capture_mod.probe_error([H], [D], torch.zeros_like(G)) == float("inf")
    assert capture_mod.probe_error([H], [torch.zeros_like(D)], torch.zeros_like(G)) == 0.0
    assert capture_mod.check_tolerance(torch.float64) < 1e-7 < capture_mod.check_tolerance(torch.float32) < 1e-3
