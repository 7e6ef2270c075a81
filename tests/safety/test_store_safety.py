"""Stores that cannot lie: a damaged stored point is not done (--status, results.csv and the exit
code say the same) and is recomputed on resume, bit for bit; a foreign or hand-edited sweep.json
is exit 2; an executor that cannot start leaves nothing behind; a jobqueue whose workers never
start fails its points instead of waiting forever."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _reliability import record, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradrank.errors import InputError
from gradrank.sweeps import store as sws

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--set", "data.n=24", "--set", "data.d=16", "--set", "model.width=20"]
GRID = ["--grid", "data.nu=0.1,0.2,0.3,0.4,0.5,0.6,0.7"]


def gradrank(*args, env=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "gradrank", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )


def table(out: Path) -> dict[str, str]:
    with open(out / "results.csv", newline="") as fh:
        return {r["point"]: r["status"] for r in csv.DictReader(fh)}


def results(run: Path) -> dict:
    """metrics.json without the timings (the one part that differs between two identical runs)."""
    m = json.loads((run / "metrics.json").read_text())
    m["provenance"].pop("timings")
    return m


DAMAGE = {
    "metrics.json deleted": lambda d: (d / "metrics.json").unlink(),
    "metrics.json truncated": lambda d: (d / "metrics.json").write_bytes((d / "metrics.json").read_bytes()[:50]),
    "arrays.npz truncated": lambda d: (d / "arrays.npz").write_bytes((d / "arrays.npz").read_bytes()[:100]),
    "metrics.json of another point": None,  # filled in below
    "marker deleted": lambda d: (d / ".gradrank-output.json").unlink(),
    "a stray file added": lambda d: (d / "notes.txt").write_text("mine"),
    "directory emptied": lambda d: [p.unlink() for p in list(d.iterdir())],
}


@pytest.fixture(scope="module")
def stored_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sw") / "sweep"
    r = gradrank("sweep", *SMALL, *GRID, "-j", "1", "-o", out, "--no-report")
    assert r.returncode == 0, r.stderr
    return out


def test_damaged_points_are_failed_everywhere_and_recomputed_exactly(stored_sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(stored_sweep, out, symlinks=True)
    m = json.loads((out / "sweep.json").read_text())
    hashes = [p["hash"] for p in m["points"]]
    original = {h: results(out / "points" / h) for h in hashes}
    damaged = dict(zip(DAMAGE, hashes))
    for kind, h in damaged.items():
        d = out / "points" / h
        if kind == "metrics.json of another point":
            other = out / "points" / hashes[-1] / "metrics.json"
            (d / "metrics.json").write_bytes(other.read_bytes())
        else:
            DAMAGE[kind](d)

    st = gradrank("sweep", "--status", out)
    assert st.returncode == 0 and f"{len(hashes)} points, 0 done, {len(hashes)} failed, 0 pending" in st.stdout, st.stdout
    r = gradrank("report", out, "--format", "html")
    assert r.returncode == 0, r.stderr
    assert set(table(out).values()) == {"failed"}  # the table agrees with --status

    r = gradrank("sweep", *SMALL, *GRID, "-j", "1", "-o", out, "--no-report")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("was stored incompletely: recomputed") == len(hashes), r.stderr
    st = gradrank("sweep", "--status", out)
    assert f"{len(hashes)} points, {len(hashes)} done, 0 failed, 0 pending" in st.stdout, st.stdout
    assert set(table(out).values()) == {"done"}
    for kind, h in damaged.items():  # recomputed bit for bit; the damaged copy kept aside
        assert results(out / "points" / h) == original[h]
        assert (out / "points" / f"{h}.broken-1").is_dir()
        record(
            "stores",
            f"resume with a stored point's {kind}",
            "failed in --status and results.csv; recomputed identically, old copy kept",
        )


MANIFEST_EDITS = [
    ("delete", "points"),
    ("delete", "keys"),
    ("delete", "command"),
    ("type", "points"),
    ("type", "keys"),
    ("type", "executor"),
    ("hash", "../../etc"),
    ("hash", "ABC"),
    ("hash", 7),
    ("values", "x"),
    ("slurm", [{"job_id": "1; rm -rf /", "points": [], "tasks": []}]),
    ("slurm", [{"job_id": "12", "points": ["a"], "tasks": ["12_x"]}]),
    ("slurm", "nope"),
    ("format", "gradrank-sweep/9"),
    ("json", "[1, 2"),
    ("json", "[]"),
]


@settings(max_examples=len(MANIFEST_EDITS) * 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(edit=st.sampled_from(MANIFEST_EDITS))
def test_foreign_or_hand_edited_manifest_is_exit_2(stored_sweep, tmp_path_factory, edit):
    out = tmp_path_factory.mktemp("m") / "sweep"
    shutil.copytree(stored_sweep, out, symlinks=True)
    m = json.loads((out / "sweep.json").read_text())
    what, arg = edit
    if what == "delete":
        del m[arg]
    elif what == "type":
        m[arg] = "x" if arg != "executor" else []
    elif what == "hash":
        m["points"][0]["hash"] = arg
    elif what == "values":
        m["points"][0]["values"] = arg
    elif what == "slurm":
        m["slurm_jobs"] = arg
    elif what == "format":
        m["format"] = arg
    text = arg if what == "json" else json.dumps(m)
    (out / "sweep.json").write_text(text)
    with pytest.raises(InputError) as exc:
        sws.summary(sws.Store(out))
    assert "sweep" in str(exc.value) and "\n" not in str(exc.value)


def test_foreign_manifest_cli(stored_sweep, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(stored_sweep, out, symlinks=True)
    m = json.loads((out / "sweep.json").read_text())
    m["points"][0]["hash"] = "../../x"
    (out / "sweep.json").write_text(json.dumps(m))
    for args in (["sweep", "--status", out], ["report", out], ["sweep", *SMALL, *GRID, "-o", out, "--no-report"]):
        r = gradrank(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "points[0].hash" in r.stderr, r.stderr
    record(
        "stores",
        f"hand-edited sweep.json ({len(MANIFEST_EDITS)} edits: keys missing, wrong types, hash '../../x', bad job ids)",
        "exit 2 naming the field, for --status, report and resume",
    )


def _python_only_path(tmp_path: Path) -> str:
    """A PATH with python and nothing else (no sbatch, squeue, qsub)."""
    b = tmp_path / "bin"
    b.mkdir()
    os.symlink(os.path.realpath(sys.executable), b / "python")
    return str(b)


@pytest.mark.parametrize("how", ["slurm: no sbatch", "dask: unreachable scheduler", "dask jobqueue: no sbatch"])
def test_executor_that_cannot_start_leaves_nothing(tmp_path, how):
    work = tmp_path / "w"
    work.mkdir()
    env = dict(os.environ)
    extra = []
    if how == "slurm: no sbatch":
        env["PATH"] = _python_only_path(tmp_path)
        extra = ["--executor", "slurm"]
    elif how == "dask: unreachable scheduler":
        extra = ["--executor", "dask", "--scheduler", "tcp://127.0.0.1:9"]
    else:
        env["PATH"] = _python_only_path(tmp_path)
        (work / "jq.toml").write_text('[sweep.dask]\njobqueue = "slurm"\n')
        extra = [work / "jq.toml", "--executor", "dask"]
    for out in (work / "new", work / "empty"):
        if out.name == "empty":
            out.mkdir()
        r = subprocess.run(
            [sys.executable, "-m", "gradrank", "sweep", *map(str, extra), *SMALL, "--grid", "data.nu=0.1,0.2", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and "nothing was started" in lines[0], r.stderr
        before = {"jq.toml"} if "jobqueue" in how else set()
        assert tree(work) == before | ({"empty"} if out.name == "empty" else set())
    record("stores", f"sweep whose executor cannot start ({how})", f"exit 2, one line, nothing written: {lines[0][7:80]}")


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and bool(r.stdout.strip())


@pytest.mark.slurm
def test_refused_submission_removes_the_new_store(tmp_path):
    if not _slurm_up():
        if os.environ.get("CI") == "true":
            pytest.fail("SLURM is required on CI")
        pytest.skip("no SLURM controller")
    out = tmp_path / "sw"
    r = gradrank("sweep", *SMALL, "--grid", "data.nu=0.1,0.2", "--executor", "slurm", "--partition", "nosuchpartition", "-o", out)
    assert r.returncode == 2 and "sbatch refused" in r.stderr, r.stderr
    assert not out.exists()
    record("stores", "slurm sweep with a partition sbatch refuses", "exit 2, the new store removed")


@pytest.mark.slurm
def test_jobqueue_that_never_starts_fails_its_points(tmp_path):
    if not _slurm_up():
        if os.environ.get("CI") == "true":
            pytest.fail("SLURM is required on CI")
        pytest.skip("no SLURM controller")
    cfg = tmp_path / "jq.toml"
    cfg.write_text('[sweep.dask]\njobqueue = "slurm"\nqueue = "nosuchpartition"\nstart_timeout = 3\n')
    out = tmp_path / "sw"
    r = gradrank("sweep", cfg, *SMALL, "--grid", "data.nu=0.1,0.2", "--executor", "dask", "-o", out, "--no-report", timeout=120)
    assert r.returncode == 3 and "no worker job started within 3 s" in r.stderr, r.stderr
    st = gradrank("sweep", "--status", out)
    assert "2 points, 0 done, 2 failed, 0 pending" in st.stdout
    assert set(table(out).values()) == {"failed"}
    record(
        "stores",
        "dask-jobqueue whose worker jobs never start (start_timeout = 3 s)",
        "exit 3, points failed with the reason; --status and table agree",
    )
