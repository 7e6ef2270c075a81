"""Training (docs/training.md): descent, reproducibility, tracked top-k against exact SVDs, divergence, CLI."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.models.closed_form import gradient
from gradrank.models.twolayer import Network
from gradrank.studies import train as train

SMALL = ["data.n=60", "data.d=80", "model.width=100", "output.report=false"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*sets, seed=0):
    return config.load(sets=[*SMALL, *sets], seed=seed)


def test_gradient_descent_lowers_the_loss_and_the_same_seed_repeats_it():
    cfg = _cfg("train.steps=30", "train.lr=0.05", "train.record_every=10", "train.checkpoint_every=30")
    a, b = train.train(cfg), train.train(cfg)
    losses = [r["train_loss"] for r in a.rows]
    assert [r["step"] for r in a.rows] == [0, 10, 20, 30]
    assert all(x > y for x, y in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0]
    assert not a.diverged and math.isfinite(a.rows[-1]["test_loss"]) and a.info["n_test"] == 15  # n // 4 by default
    for ra, rb in zip(a.rows, b.rows):
        assert all(ra[k] == rb[k] or (ra[k] != ra[k] and rb[k] != rb[k]) for k in ra.to_dict())  # NaN == NaN here
    assert torch.equal(a.W, b.W)
    # the final analysis is the exact decomposition at the final weights
    assert a.result.metrics["norms"]["S1"] == pytest.approx(a.rows[-1]["S1"], rel=1e-12)
    assert a.result.metrics["singular_values"][0] == pytest.approx(a.rows[-1]["G"], rel=1e-8)


def test_a_different_seed_gives_a_different_trajectory():
    a = train.train(_cfg("train.steps=5", "train.record_every=5", "train.lr=0.05"))
    b = train.train(_cfg("train.steps=5", "train.record_every=5", "train.lr=0.05", seed=1))
    assert a.rows[-1]["train_loss"] != b.rows[-1]["train_loss"]


def test_tracked_topk_agrees_with_exact_svd_at_checkpoints():
    cfg = _cfg(
        "train.steps=24",
        "train.lr=0.05",
        "train.record_every=4",
        "train.checkpoint_every=12",
        "analysis.top_k=2",
        "data.nu=0.4",
        "model.planted=1.0",
    )
    tr = train.train(cfg)
    assert sum(r["track_fallback"] for r in tr.rows) == 0  # the warm-started iteration did the work
    assert max(r["track_iterations"] for r in tr.rows[1:]) < 30
    for t in (0, 12, 24):
        exact, tracked = tr.checkpoints[f"G_sv_step{t}"][:2], tr.checkpoints[f"track_s_step{t}"]
        assert np.abs(tracked - exact).max() / exact.min() < 1e-6, t
        U, Ut = tr.checkpoints[f"G_U_step{t}"], tr.checkpoints[f"track_U_step{t}"]
        cos = np.linalg.svd(U.T @ Ut, compute_uv=False).min()
        assert math.acos(min(cos, 1.0)) < 1e-3, t
    # an independent dense SVD of the final gradient, recomputed from the final weights
    _, ds, net = __import__("gradrank.studies.analyze", fromlist=["prepare"]).prepare(train.resolve(cfg))
    G = gradient(Network(tr.W, tr.a, net.gamma, net.act), ds.X, ds.y, "mse").dense()
    sv = torch.linalg.svdvals(G).numpy()
    assert np.allclose(tr.checkpoints["G_sv_step24"], sv[: len(tr.checkpoints["G_sv_step24"])], rtol=1e-8, atol=1e-7 * sv[0])
    W0 = net.W.numpy()
    assert np.allclose(tr.checkpoints["WmW0_sv_step24"], np.linalg.svd(tr.W.numpy() - W0, compute_uv=False), rtol=1e-8)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sgd_and_adam_lower_the_loss(optimizer):
    lr = 0.05 if optimizer == "sgd" else 0.01
    tr = train.train(
        _cfg(
            f"train.optimizer={optimizer}",
            f"train.lr={lr}",
            "train.batch_size=20",
            "train.steps=30",
            "train.record_every=30",
            "train.checkpoint_every=30",
        )
    )
    assert tr.rows[-1]["train_loss"] < 0.8 * tr.rows[0]["train_loss"]


def test_mean_field_learning_rate_is_scaled_by_width():
    cfg = _cfg("model.scaling=mf", "train.lr=0.1")
    assert train.lr_effective(cfg, 100) == pytest.approx(10.0)
    assert train.lr_effective(cfg.replace(**{"train.lr_scale": "none"}), 100) == pytest.approx(0.1)
    assert train.lr_effective(cfg.replace(**{"model.scaling": "ntk"}), 100) == pytest.approx(0.1)


def test_divergence_stops_cleanly_and_keeps_the_trajectory(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            *sum((["--set", s] for s in SMALL), []),
            "--set",
            "train.lr=1e4",
            "--set",
            "train.steps=200",
            "--set",
            "train.record_every=1",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "diverged at step" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "train" and m["diverged"] and "lower train.lr" in m["message"]
    rows = list(csv.DictReader((out / "trajectory.csv").open()))
    assert 1 <= len(rows) < 200 and all(math.isfinite(float(r["train_loss"])) for r in rows)
    assert m["train"]["steps_done"] == int(rows[-1]["step"])


def test_train_command_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "train",
            *sum((["--set", s] for s in SMALL), []),
            "--set",
            "train.steps=10",
            "--set",
            "train.record_every=5",
            "--set",
            "train.checkpoint_every=10",
            "--set",
            "regularizer.weight_decay=0.01",
            "-q",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "train" and m["diverged"] is False and m["config"]["data"]["n_test"] == 15
    assert m["identity_error"] < 1e-13 and m["norms"]["reg"] > 0
    header = (out / "trajectory.csv").read_text().splitlines()[0].split(",")
    assert header == train.columns(8)
    rows = list(csv.DictReader((out / "trajectory.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 5, 10]
    assert float(rows[-1]["reg"]) == pytest.approx(m["norms"]["reg"], rel=1e-4)  # tracked (residual 1e-3) vs exact
    with np.load(out / "checkpoints.npz") as z:
        assert {"G_sv_step0", "G_sv_step10", "WmW0_sv_step10"} <= set(z.files)
    with np.load(out / "weights.npz") as z:
        assert z["W"].shape == (100, 80)
    bad = CliRunner().invoke(app, ["train", "--set", "train.lr=-1", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "train.lr" in bad.output and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
def test_step_zero_record_equals_a_one_shot_analysis_of_the_same_weights(activation):
    """Training's record at step 0 and `analyze` of the same weights are one measurement: the same
    outlier rule (the floor included: a linear net once gave 8 against 1), norms and alignments."""
    from gradrank.studies import analyze as analysis

    cfg = _cfg(f"model.activation={activation}", "train.steps=0", "analysis.mu=empirical", "data.nu=0.4", "analysis.top_k=8")
    row = train.train(cfg).rows[0]
    m = analysis.analyze(train.resolve(cfg)).metrics
    assert row["outliers"] == m["rank"]["outliers"]
    for key in ("S1", "S12", "S2", "E", "G"):
        assert row[key] == pytest.approx(m["norms"][key], rel=1e-6, abs=1e-12 * m["norms"]["G"]), key
    resolved = 2 * row["track_residual"] * m["norms"]["G"]  # the tracked values' stated accuracy
    assert [row[f"s{i + 1}"] for i in range(8)] == pytest.approx(m["singular_values"], rel=1e-6, abs=resolved)
    assert row["stable_rank"] == pytest.approx(m["rank"]["stable"], rel=1e-6)
    for i in range(1, min(2, m["rank"]["outliers"]) + 1):  # directions of outliers (below, not determined)
        assert row[f"align_residue_{i}"] == pytest.approx(m["alignment"]["residue"][i - 1], abs=1e-5)
        assert row[f"align_spike_{i}"] == pytest.approx(m["alignment"]["spike"][i - 1], abs=1e-5)
