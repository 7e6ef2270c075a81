"""Issue 24, "the rest of the round": resource guards, ownership and identity of the newer commands.

Memory guards are checked under small compute.max_memory_gb caps, never by allocating what they
guard against; the 3 GB result file is a sparse file (truncate)."""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradrank.cli.app import app

SMALL = ["--set", "data.n=60", "--set", "data.d=40", "--set", "model.width=50"]

# A user model whose full-batch activations (20000 rows x 3000 hidden units, float32) need far more
# than 0.5 GiB to train or capture, while the file itself builds in milliseconds.
BIG_MODEL = """
import torch


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 3000), torch.nn.Tanh(), torch.nn.Linear(3000, 1))
    X = torch.randn(20000, 100)
    return {"model": model, "inputs": X, "targets": X[:, :1].clone(), "loss": torch.nn.functional.mse_loss}
"""

SMALL_MODEL = """
import torch


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    X = torch.randn(40, 6)
    return {"model": model, "inputs": X, "targets": X[:, :1].clone(), "loss": torch.nn.functional.mse_loss}
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


# ---------------------------------------------------------------------------- memory guards


@pytest.mark.parametrize("command", ["layers", "advise"])
def test_builtin_mlp_data_is_checked_before_it_is_generated(command):
    # 3e6 x 2000 float64 data is 48 GB: refused from the config before any of it exists
    res = invoke(command, "--model", "mlp", "--set", "data.n=3000000", "--set", "data.d=2000", "--set", "compute.max_memory_gb=3")
    assert res.exit_code == 2, res.output
    assert "'data.n', 'data.d'" in error_line(res) and "3 GiB allowed" in error_line(res)


def test_advise_twolayer_data_is_checked_before_it_is_generated():
    res = invoke("advise", "--set", "data.n=3000000", "--set", "data.d=2000", "--set", "compute.max_memory_gb=3")
    assert res.exit_code == 2, res.output
    assert "'data.n', 'data.d'" in error_line(res)


def test_advise_user_model_obeys_the_memory_cap_that_layers_obeys(tmp_path):
    (tmp_path / "big.py").write_text(BIG_MODEL)
    spec = f"{tmp_path / 'big.py'}:build"
    cap = ["--set", "compute.max_memory_gb=0.5"]
    layers = invoke("layers", "--model", spec, *cap, "-o", tmp_path / "l", "-q")
    advise = invoke("advise", "--model", spec, *cap, "--set", "train.steps=1", "--no-validate", "-o", tmp_path / "a", "-q")
    assert layers.exit_code == 2 and "0.50 GiB allowed" in error_line(layers)
    assert advise.exit_code == 2, advise.output
    assert "training and recording every chosen layer" in error_line(advise) and "0.50 GiB allowed" in error_line(advise)
    assert "--force" not in error_line(advise)  # advise has no --force to suggest
    assert not (tmp_path / "a").exists()


def test_advise_training_estimate_counts_activations_and_parameters():
    """training_bytes by hand for a 2-layer Linear stack: 6 x parameter bytes plus, per layer, rows x
    (d_in + 3 d_out) and 4 d_out x d_in entries."""
    import torch

    from gradrank.models.registry import from_dict, linear_layers
    from gradrank.studies.advise import training_bytes

    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    X = torch.randn(11, 7, dtype=torch.float64)
    problem = from_dict(
        {"model": model, "inputs": X, "targets": torch.zeros(11, 2, dtype=torch.float64), "loss": torch.nn.functional.mse_loss},
        "t",
    )
    layers = linear_layers(problem.model, None)
    params = (7 * 5 + 5 + 5 * 2 + 2) * 8
    expected = 6 * params + 8 * (11 * (7 + 3 * 5) + 4 * 35) + 8 * (11 * (5 + 3 * 2) + 4 * 10)
    assert training_bytes(problem, layers) == expected


def test_report_refuses_a_huge_result_file_before_reading_it(tmp_path):
    out = tmp_path / "lay"
    assert invoke("layers", "--model", "mlp", *SMALL, "--no-report", "-o", out, "-q").exit_code == 0
    with open(out / "layers.json", "r+b") as fh:  # sparse: 3 GiB apparent size, no blocks written
        fh.truncate(3 * 2**30)
    res = invoke("report", out)
    assert res.exit_code == 2, res.output
    line = error_line(res)
    assert "layers.json" in line and "3.00 GiB" in line
    assert not (out / "report.html").exists()


def test_result_file_limit_applies_to_every_result_reader(tmp_path):
    from gradrank.config.resources import check_result_file
    from gradrank.errors import InputError
    from gradrank.results.files import read_json

    p = tmp_path / "metrics.json"
    p.write_text('{"schema": 1}' + " " * 200)
    assert check_result_file(p, limit=1000) == p.stat().st_size
    with pytest.raises(InputError, match="metrics.json"):
        check_result_file(p, limit=100)
    with open(p, "r+b") as fh:
        fh.truncate(300 * 2**20)
    with pytest.raises(InputError, match="metrics.json: 0.29 GiB"):
        read_json(p)


# ---------------------------------------------------------------------------- ownership


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "sw"
    res = invoke("sweep", "--grid", "data.nu=1,2", *SMALL, "-j", "1", "-o", root)
    assert res.exit_code == 0, res.output
    return root


def test_report_never_replaces_a_sweep_report_it_did_not_write(sweep_store, tmp_path):
    root = tmp_path / "sw"
    shutil.copytree(sweep_store, root)
    (root / ".gradrank-output.json").unlink(missing_ok=True)  # a store without gradrank's marker ...
    (root / "report.html").write_text("my notes")  # ... holding someone's report.html
    res = invoke("report", root)
    assert res.exit_code == 2, res.output
    assert "report.html" in error_line(res) and "not written by gradrank" in error_line(res)
    assert (root / "report.html").read_text() == "my notes"


def test_report_replaces_the_sweep_report_it_wrote(sweep_store, tmp_path):
    root = tmp_path / "sw"
    shutil.copytree(sweep_store, root)
    (root / "report.html").write_text("edited")  # its hash no longer matches gradrank's marker
    assert invoke("report", root).exit_code == 2
    assert (root / "report.html").read_text() == "edited"
    os.remove(root / "report.html")
    res = invoke("report", root)  # a new file: written, and recorded so the next report replaces it
    assert res.exit_code == 0, res.output
    assert invoke("report", root).exit_code == 0


# ---------------------------------------------------------------------------- identity


def test_advise_relative_model_file_is_recorded_absolute_and_reruns_from_anywhere(tmp_path, monkeypatch):
    work, other = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    other.mkdir()
    (work / "net.py").write_text(SMALL_MODEL)
    monkeypatch.chdir(work)
    args = ["--ranks", "1,2", "--intervals", "1,2", "--set", "train.steps=3", "--no-validate", "--no-report", "-q"]
    res = invoke("advise", "--model", "net.py:build", *args, "-o", tmp_path / "a")
    assert res.exit_code == 0, res.output
    saved = tomllib.loads((tmp_path / "a" / "config.toml").read_text())
    assert saved["advise"]["model"] == f"{work / 'net.py'}:build"
    assert len(saved["advise"]["model_sha256"]) == 64
    monkeypatch.chdir(other)  # the saved config alone reruns the same run from another directory
    again = invoke("advise", tmp_path / "a" / "config.toml", "--no-validate", "--no-report", "-q", "-o", tmp_path / "b")
    assert again.exit_code == 0, again.output
    first, second = (json.loads((tmp_path / d / "advice.json").read_text()) for d in ("a", "b"))
    assert first["config_hash"] == second["config_hash"] and first["model"] == second["model"]
    assert [lay["energy"] for lay in first["layers"]] == [lay["energy"] for lay in second["layers"]]
    (work / "net.py").write_text(SMALL_MODEL + "\n# changed\n")  # a changed file no longer reproduces the run
    changed = invoke("advise", tmp_path / "a" / "config.toml", "--no-validate", "--no-report", "-q", "-o", tmp_path / "c")
    assert changed.exit_code == 2 and "advise.model_sha256" in error_line(changed)


def test_layers_and_advise_record_the_same_spec_for_a_relative_file(tmp_path, monkeypatch):
    from gradrank import config as config_mod

    (tmp_path / "net.py").write_text(SMALL_MODEL)
    monkeypatch.chdir(tmp_path)
    cfg = config_mod.resolve(config_mod.load(sets=["layers.model=net.py:build", "advise.model=net.py:build"]))
    assert cfg.layers.model == cfg.advise.model == f"{Path(tmp_path) / 'net.py'}:build"
    assert cfg.layers.model_sha256 == cfg.advise.model_sha256
