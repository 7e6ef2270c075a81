"""Sweeps on a real single-node SLURM cluster (started by .ci/slurm-up.sh): results through
submitit job arrays, --status from another shell while the array runs, and an array task
cancelled with scancel reported failed and rerun on resume."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from gradrank import config
from gradrank.studies import analyze as analysis

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("one_thread")]
SMALL = ["--set", "data.n=60", "--set", "data.d=80", "--set", "model.width=100"]


def _slurm_up() -> str:
    """Empty when a SLURM controller answers, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (run .ci/slurm-up.sh as root)"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not r.stdout.strip():
        return f"no SLURM controller answers ({r.stderr.strip()[:200]})"
    return ""


@pytest.fixture(scope="module", autouse=True)
def slurm():
    why = _slurm_up()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM is required on CI: {why}")
        pytest.skip(why)


def gradrank(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "gradrank", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def stored(out):
    return {
        p.name: (p / "metrics.json").stat().st_mtime_ns
        for p in (out / "points").iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }


def test_slurm_sweep_results_match_direct_runs(tmp_path):
    out = tmp_path / "sw"
    r = gradrank(
        "sweep",
        *SMALL,
        "--grid",
        "data.nu=0.1,0.5",
        "--grid",
        "model.activation=relu,tanh",
        "--executor",
        "slurm",
        "--time",
        "10",
        "--mem",
        "2G",
        "-o",
        out,
        "--no-report",
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["executor"]["name"] == "slurm" and manifest["executor"]["timeout_min"] == 10
    job = manifest["slurm_jobs"][0]
    assert sorted(job["points"]) == sorted(p["hash"] for p in manifest["points"]) and len(job["tasks"]) == 4
    for _ in range(40):  # slurmdbd records a task's end a moment after its result file exists
        acct = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job["job_id"], "-o", "JobID,State"], capture_output=True, text=True
        ).stdout
        states = dict(line.split("|") for line in acct.split())
        if all(t in states for t in job["tasks"]):
            break
        time.sleep(0.5)
    assert all(states.get(t) in ("RUNNING", "COMPLETING", "COMPLETED") for t in job["tasks"]), acct  # ran as array tasks
    script = (out / "slurm" / f"{job['job_id']}_submission.sh").read_text()
    assert "--mem=2G" in script and "--time=10" in script
    assert set(stored(out)) == {p["hash"] for p in manifest["points"]}
    for p in manifest["points"]:
        cfg = config.load(
            sets=[*SMALL[1::2], f"data.nu={p['values']['data.nu']}", f'model.activation="{p["values"]["model.activation"]}"']
        )
        assert cfg.hash() == p["hash"]
        m = json.loads((out / "points" / p["hash"] / "metrics.json").read_text())
        direct = analysis.analyze(cfg).metrics
        assert m["norms"]["S1"] == pytest.approx(direct["norms"]["S1"], rel=1e-10)
        assert m["norms"]["S2"] == pytest.approx(direct["norms"]["S2"], rel=1e-10)
        assert m["regime"] == direct["regime"]


def test_scancelled_task_is_failed_then_rerun(tmp_path):
    out = tmp_path / "sw"
    args = [
        "sweep",
        *SMALL,
        "--grid",
        "data.nu=0.1,0.3,0.5",
        "--executor",
        "slurm",
        "--array-parallelism",
        1,
        "-o",
        out,
        "--no-report",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradrank", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    manifest = {}
    while time.time() < deadline and not manifest.get("slurm_jobs"):
        time.sleep(0.1)
        try:
            manifest = json.loads((out / "sweep.json").read_text())
        except (OSError, ValueError):
            pass
    job = manifest["slurm_jobs"][0]
    status = gradrank("sweep", "--status", out)  # another shell, while the array runs
    assert status.returncode == 0 and f"slurm jobs {job['job_id']}:" in status.stdout
    assert "3 points" in status.stdout and "pending" in status.stdout
    victim = job["tasks"][2]  # still pending: one task at a time
    subprocess.run(["scancel", victim], check=True)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, err
    cancelled = job["points"][2]
    assert cancelled in err and "cancelled" in err
    assert set(stored(out)) == set(job["points"][:2])
    status = gradrank("sweep", "--status", out)
    assert "3 points, 2 done, 1 failed, 0 pending" in status.stdout and cancelled in status.stdout
    before = stored(out)
    r = gradrank(*args)
    assert r.returncode == 0, r.stderr
    after = stored(out)
    assert set(after) == set(job["points"]) and all(after[h] == t for h, t in before.items())
    manifest = json.loads((out / "sweep.json").read_text())
    assert [j["points"] for j in manifest["slurm_jobs"]] == [job["points"], [cancelled]]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",done," in row for row in rows[1:])


def test_dask_jobqueue_cluster_from_the_sweep_table(tmp_path):
    """[sweep.dask] jobqueue = "slurm": Dask workers are SLURM jobs (dask-jobqueue)."""
    path = tmp_path / "s.toml"
    path.write_text(
        '[data]\nn = 60\nd = 80\n[model]\nwidth = 100\n[sweep.grid]\n"data.nu" = [0.1, 0.5]\n'
        '[sweep.dask]\njobqueue = "slurm"\nqueue = "debug"\nmemory = "2GB"\nwalltime = "00:10:00"\nworkers = 1\n'
    )
    out = tmp_path / "sw"
    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    r = gradrank("sweep", path, "--executor", "dask", "-o", out, "--no-report")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["executor"]["jobqueue"]["jobqueue"] == "slurm"
    assert set(stored(out)) == {p["hash"] for p in manifest["points"]}
    for _ in range(40):  # slurmdbd records jobs asynchronously
        jobs = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-S", start, "-o", "JobName,Partition"], capture_output=True, text=True
        ).stdout
        if "dask-worker|debug" in jobs:
            break
        time.sleep(0.5)
    assert "dask-worker|debug" in jobs  # the worker ran as a SLURM job in the configured queue
    assert list((out / "dask").glob("*.out"))  # its log is kept with the sweep
    m = json.loads((out / "points" / manifest["points"][1]["hash"] / "metrics.json").read_text())
    cfg = config.load(sets=[*SMALL[1::2], "data.nu=0.5"])
    assert m["config_hash"] == cfg.hash()
    assert m["norms"]["S2"] == pytest.approx(analysis.analyze(cfg).metrics["norms"]["S2"], rel=1e-10)
