"""`gradrank layers` through the CLI: a run directory with its report, and every bad input exit 2
with one line naming it and nothing written."""

from __future__ import annotations

import json

import pytest
from _reliability import tree
from typer.testing import CliRunner

from gradrank.cli.app import app

SMALL = ["--set", "data.n=40", "--set", "data.d=30", "--set", "model.width=50", "--set", "model.depth=3"]

USER = """
import torch
def ok(cfg):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    return {"model": model.double(), "inputs": torch.randn(9, 5, dtype=torch.float64),
            "targets": torch.zeros(9, dtype=torch.float64), "loss": lambda o, t: ((o[:, 0] - t) ** 2).mean()}
def raises(cfg):
    raise KeyError("user failure")
def missing():
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(3, 2), "targets": torch.ones(3)}
def vector_loss():
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(3, 2), "targets": torch.ones(3), "loss": lambda o, t: o - t}
def no_linear():
    return {"model": torch.nn.Sequential(torch.nn.Tanh()), "inputs": torch.ones(3, 2), "targets": None, "loss": lambda o, t: o.sum()}
def frozen_loss():
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(3, 2), "targets": None, "loss": lambda o, t: torch.tensor(1.0)}
def bad_forward():
    return {"model": torch.nn.Linear(2, 1), "inputs": torch.ones(3, 4), "targets": None, "loss": lambda o, t: o.sum()}
"""


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def user_file(tmp_path):
    f = tmp_path / "user_model.py"
    f.write_text(USER)
    return f


def test_layers_command_writes_a_run_and_report(tmp_path, user_file):
    res = cli("layers", "--model", "mlp", *SMALL, "--set", 'output.name="<b>deep</b>"', "-o", tmp_path / "run")
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "run" / "layers.json").read_text())
    assert payload["schema"] == 1 and [r["name"] for r in payload["layers"]] == ["layers.0", "layers.1", "readout"]
    for key in ("name", "shape", "samples", "norms", "singular_values", "identity_error", "rank", "outliers", "alignment"):
        assert key in payload["layers"][0]
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count('<tr><th title="layers.') == 2 and "&lt;b&gt;deep&lt;/b&gt;" in html and "<b>deep</b>" not in html
    (tmp_path / "run" / "report.html").unlink()
    res = cli("report", tmp_path / "run")  # re-rendered from the directory alone
    assert res.exit_code == 0 and (tmp_path / "run" / "report.html").read_text() == html, res.output
    # the user's file: its sha256 in the config, hence in the run identity
    res = cli("layers", "--model", f"{user_file}:ok", "-o", tmp_path / "user", "--no-report")
    assert res.exit_code == 0, res.output
    payload = json.loads((tmp_path / "user" / "layers.json").read_text())
    import hashlib

    assert payload["config"]["layers"]["model_sha256"] == hashlib.sha256(user_file.read_bytes()).hexdigest()
    assert payload["layers"][0]["form"] == "residue" and payload["layers"][0]["identity_error"] < 1e-12


CASES = [
    (":raises", "raises() raised KeyError"),
    (":missing", "lacks 'loss'"),
    (":vector_loss", "the loss is not a scalar"),
    (":no_linear", "has no linear layer"),
    (":frozen_loss", "does not depend on the model's parameters"),
    (":bad_forward", "the forward pass raised RuntimeError"),
    (":nothing", "has no function nothing"),
]


@pytest.mark.parametrize("suffix, needle", CASES)
def test_bad_user_models_exit_2_one_line_nothing_written(tmp_path, user_file, suffix, needle):
    before = tree(tmp_path)
    res = cli("layers", "--model", f"{user_file}{suffix}", "-o", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert "Traceback" not in res.output and tree(tmp_path) == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "nosuch.py:f"], "layers.model"),
        (["--model", "bert"], "not twolayer, mlp, minilm or path/to/file.py:function"),
        (["--model", "mlp", "--layers", "layers.9*"], "'layers.9*' matches no linear layer"),
        (["--model", "mlp", "--set", "model.hidden=[3]"], "model.hidden"),
        (["--model", "mlp", "--set", "compute.max_memory_gb=1e-6"], "GiB allowed"),  # refused before the data is generated
    ],
)
def test_bad_specs_exit_2(tmp_path, args, needle):
    before = tree(tmp_path)
    res = cli("layers", *args, *SMALL, "-o", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert tree(tmp_path) == before


def test_debug_shows_the_users_traceback(tmp_path, user_file):
    res = cli("--debug", "layers", "--model", f"{user_file}:raises", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "Traceback" in res.stderr and "KeyError: 'user failure'" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")


def test_debug_lasts_one_invocation(tmp_path, user_file):
    """--debug on one command line must not leak into the next call of the same process."""
    cli("--debug", "layers", "--model", f"{user_file}:raises", "-o", tmp_path / "a")
    res = cli("layers", "--model", f"{user_file}:raises", "-o", tmp_path / "b")
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
