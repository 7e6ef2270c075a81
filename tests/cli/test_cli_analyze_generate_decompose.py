"""analyze / generate / decompose end to end through the CLI."""

import json
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app

SMALL = ["--set", "data.n=60", "--set", "data.d=80", "--set", "model.width=100"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_analyze_writes_run_directory(tmp_path):
    out = tmp_path / "run"
    r = run("analyze", *SMALL, "--set", "data.nu=0.3", "--seed", 5, "-o", out, "--no-report")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    cfg = config.from_dict(tomllib.loads((out / "config.toml").read_text()))
    assert cfg.seed == 5 and cfg.data.nu == 0.3 and cfg.analysis.mu == "population"
    assert m["config_hash"] == cfg.hash()
    assert m["sizes"] == {"n": 60, "d": 80, "m": 100}
    for key in ("G", "G_fro", "S1", "S12", "S2", "E"):
        assert m["norms"][key] > 0
    assert len(m["singular_values"]) == cfg.analysis.top_k
    assert m["singular_values"] == sorted(m["singular_values"], reverse=True)
    assert m["identity_error"] < 1e-12
    assert m["provenance"]["versions"]["torch"]
    arrays = np.load(out / "arrays.npz", allow_pickle=False)
    assert np.allclose(arrays["singular_values"][: cfg.analysis.top_k], m["singular_values"])
    assert "regime" in r.output


def test_same_seed_same_metrics(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        assert run("analyze", *SMALL, "-o", o, "--no-report").exit_code == 0
    ma, mb = (json.loads((o / "metrics.json").read_text()) for o in outs)
    for k in ("norms", "singular_values", "alignment", "config_hash"):
        assert ma[k] == mb[k]


def test_generate_then_decompose_reproduces_analyze(tmp_path):
    """decompose on generated data + saved weights gives the analysis of the same spiked setting
    up to the spike re-extraction (empirical q is the top principal direction, so compare G)."""
    data = tmp_path / "d.npz"
    assert run("generate", *SMALL, "-o", data).exit_code == 0
    z = np.load(data, allow_pickle=False)
    assert z["X"].shape == (60, 80) and z["y"].shape == (60,) and z["q"].shape == (80,)
    assert np.allclose(z["X"], z["X_B"] + z["zeta"] * np.outer(z["z"], z["q"]))
    # weights: the network the analysis would initialise
    from gradrank.studies import analyze as analysis

    cfg = config.load(sets=SMALL[1::2])
    _, ds, net = analysis.prepare(cfg)
    np.savez(tmp_path / "w.npz", W=net.W.numpy(), a=net.a.numpy())
    out = tmp_path / "dec"
    r = run("decompose", "--data", data, "--weights", tmp_path / "w.npz", "--set", "data.center=false", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    ref = analysis.analyze(cfg).metrics
    assert m["norms"]["G"] == pytest.approx(ref["norms"]["G"], rel=1e-10)  # same data, weights: same G
    assert m["identity_error"] < 1e-12
    assert m["config"]["data"]["source"] == "file" and m["config"]["analysis"]["mu"] == "empirical"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "data.n=0"], "data.n"),
        (["--set", "data.nu=-0.5"], "data.nu"),
        (["--set", "model.activation=swish"], "model.activation"),
        (["--set", "model.widht=10"], "did you mean 'width'"),
    ],
)
def test_bad_config_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "gradrank", "analyze", *args, "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 2
    assert needle in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_help_does_not_import_torch():
    code = (
        "import sys; from gradrank.cli.app import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; print('torch' in sys.modules)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip() == "False", p.stderr
