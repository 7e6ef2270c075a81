"""onestep as a sweep command on every executor (local pool, Dask, SLURM): each stored point equals
a direct run of its config, over axes of nu, alpha, the activation, a regulariser and whether the
target sees the spike; results.csv carries the per-eta columns."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from gradrank.results import onestep as onestep_out
from gradrank.studies import onestep
from gradrank.sweeps import spec as sweep
from gradrank.sweeps import store as sweeps
from gradrank.sweeps.executors import DaskExecutor, LocalExecutor

pytestmark = pytest.mark.usefixtures("one_thread")
SETS = ["data.n=40", "data.d=30", "model.width=50", "onestep.eta=[0.0, 2.0, 0.5]", "data.target=single_index", "data.link=tanh"]
GRID = [  # zipped: three points that differ in every swept key
    "data.nu=0.0,0.3,0.5",
    "data.alpha=0.0,0.5,0.0",
    "model.activation=relu,tanh,relu",
    "regularizer.weight_decay=0.0,0.0,0.01",
    "data.index_sees_spike=false,true,false",
]


def check_store(root, pts):
    for p in pts:
        stored = onestep_out.read(root / "points" / p.hash)
        direct = onestep.study(p.config)
        assert stored.config.hash() == p.hash and stored.seeds == [p.config.seed]
        assert [x.test_error for x in stored.points] == pytest.approx([x.test_error for x in direct.points], rel=1e-10)
        assert [x.align_spike for x in stored.points][1] == pytest.approx(direct.points[1].align_spike, rel=1e-10)
    with open(root / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(pts) and all(r["status"] == "done" for r in rows)
    assert all(float(r["eta.2.test_error"]) > 0 and float(r["eta.0.5.test_error"]) > 0 and r["eta.0.test_error"] for r in rows)
    return rows


def test_local_executor_runs_onestep_points(tmp_path):
    base, spec = sweep.load(None, SETS, grid=GRID, zip_axes=True, command="onestep")
    pts = sweep.points(base, spec)
    assert all(p.config.data.n_test == 40 for p in pts)  # onestep.resolve: the test set `gradrank onestep` uses
    ex = LocalExecutor(jobs=2, threads=1)
    store = sweeps.open_store(tmp_path / "sw", base, spec, pts, ex.info())
    assert sweep.run(store, pts, spec.command, ex, sweeps.run_point) == []
    rows = check_store(tmp_path / "sw", pts)
    assert [r["model.activation"] for r in rows] == ["relu", "tanh", "relu"]
    from gradrank.report import render

    (html,) = render.render_dir(tmp_path / "sw")  # the sweep report draws the onestep columns
    text = html.read_text()
    assert text.count("<svg") >= 1 and "η=0.5" in text and "η=2" in text


def test_dask_executor_runs_onestep_points(tmp_path):
    distributed = pytest.importorskip("distributed")
    base, spec = sweep.load(None, SETS, grid=["data.nu=0.0,0.3"], command="onestep")
    pts = sweep.points(base, spec)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        ex = DaskExecutor(scheduler=c.scheduler_address)
        store = sweeps.open_store(tmp_path / "sw", base, spec, pts, ex.info())
        assert sweep.run(store, pts, spec.command, ex, sweeps.run_point) == []
    check_store(tmp_path / "sw", pts)


@pytest.mark.slurm
def test_slurm_executor_runs_onestep_points(tmp_path):
    from test_sweep_slurm import _slurm_up

    why = _slurm_up()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM is required on CI: {why}")
        pytest.skip(why)
    out = tmp_path / "sw"
    args = [a for s in SETS for a in ("--set", s)] + [a for g in GRID[:2] for a in ("--grid", g)]
    r = subprocess.run(
        [sys.executable, "-m", "gradrank", "sweep", *args, "--zip", "--command", "onestep", "--executor", "slurm",
         "--time", "10", "--mem", "2G", "-o", str(out), "--no-report"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    base, spec = sweep.load(None, SETS, grid=GRID[:2], zip_axes=True, command="onestep")
    pts = sweep.points(base, spec)
    manifest = sweeps.Store(out).manifest()
    assert manifest["command"] == "onestep" and manifest["executor"]["name"] == "slurm" and manifest["slurm_jobs"]
    check_store(out, pts)


def test_unknown_command_is_bad_input():
    from gradrank.errors import InputError

    with pytest.raises(InputError, match="sweep.command"):
        sweep.load(None, SETS, command="onestepp")
