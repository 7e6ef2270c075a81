"""Sweeps on a real Dask cluster: a worker process killed mid-sweep loses no point and
duplicates none; the CLI path through --executor dask --scheduler."""

import json
import os
import signal
import subprocess
import sys

import pytest

from gradrank import config
from gradrank.studies import analyze as analysis
from gradrank.sweeps import spec as sweep
from gradrank.sweeps import store as sweeps
from gradrank.sweeps.executors import DaskExecutor

pytestmark = pytest.mark.usefixtures("one_thread")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


def stored_points(root):
    return sorted(p.name for p in (root / "points").iterdir() if p.is_dir() and not p.name.startswith("."))


def test_killed_worker_mid_sweep_every_point_once(cluster, tmp_path):
    c, client = cluster
    base, spec = sweep.load(None, ["data.n=150", "data.d=200", "model.width=250"], grid=["data.nu=0:0.6:3"], seeds=2)
    pts = sweep.points(base, spec)
    ex = DaskExecutor(scheduler=c.scheduler_address)
    store = sweeps.open_store(tmp_path / "sw", base, spec, pts, ex.info())
    killed = []

    def on_event(p):
        if p.outcome is not None and not killed:  # kill a worker that is busy with a point
            busy = [w for w, keys in client.processing().items() if keys]
            pids = client.run(os.getpid)
            victim = busy[0] if busy else next(iter(pids))
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(victim)

    failed = sweep.run(store, pts, spec.command, ex, sweeps.run_point, on_event)
    assert killed and failed == []
    assert stored_points(tmp_path / "sw") == sorted(p.hash for p in pts)
    rows = (tmp_path / "sw" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(pts)
    for p in pts:  # each stored result equals a direct analysis of that point's config
        m = json.loads((tmp_path / "sw" / "points" / p.hash / "metrics.json").read_text())
        direct = analysis.analyze(p.config).metrics
        assert m["config_hash"] == p.hash
        assert m["norms"]["S1"] == pytest.approx(direct["norms"]["S1"], rel=1e-10)
        assert m["norms"]["S2"] == pytest.approx(direct["norms"]["S2"], rel=1e-10)
        assert m["singular_values"] == pytest.approx(direct["singular_values"], rel=1e-9)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def test_cli_sweep_on_existing_scheduler(cluster, tmp_path):
    c, _ = cluster
    out = tmp_path / "sw"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradrank",
            "sweep",
            "--set",
            "data.n=60",
            "--set",
            "data.d=80",
            "--set",
            "model.width=100",
            "--grid",
            "model.activation=relu,tanh",
            "--executor",
            "dask",
            "--scheduler",
            c.scheduler_address,
            "-o",
            out,
            "--no-report",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["executor"] == {"name": "dask", "jobs": os.cpu_count(), "scheduler": c.scheduler_address, "jobqueue": None}
    assert stored_points(out) == sorted(p["hash"] for p in manifest["points"])
    tanh = next(p for p in manifest["points"] if p["values"]["model.activation"] == "tanh")
    cfg = config.load(sets=["data.n=60", "data.d=80", "model.width=100", 'model.activation="tanh"'])
    assert tanh["hash"] == cfg.hash()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "gradrank",
            "sweep",
            "--grid",
            "data.nu=0.1",
            "--executor",
            "local",
            "--scheduler",
            c.scheduler_address,
            "-o",
            tmp_path / "bad",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--scheduler" in bad.stderr
