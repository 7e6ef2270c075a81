"""Sweeps: grid parsing, point configs, the store and its table, the local executor, resume after
failures and after an interrupt (SIGTERM, then SIGKILL)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gradrank import config
from gradrank.errors import InputError
from gradrank.studies import analyze as analysis
from gradrank.sweeps import spec as sweep
from gradrank.sweeps import store as sweeps

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["--set", "data.n=60", "--set", "data.d=80", "--set", "model.width=100"]
SWEEP_TOML = """
seed = 3
[data]
n = 60
d = 80
[model]
width = 100
[sweep]
seeds = 2
mode = "product"
command = "analyze"
[sweep.grid]
"data.nu" = [0.1, 0.4]
"model.activation" = ["relu", "tanh"]
"""


def gradrank(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gradrank", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def read_table(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parse_values_lists_and_ranges():
    assert sweep.parse_values("0.1,0.25,0.4") == [0.1, 0.25, 0.4]
    assert sweep.parse_values("relu, tanh") == ["relu", "tanh"]
    assert sweep.parse_values("true,false") == [True, False]
    assert sweep.parse_values("0:0.6:7") == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], abs=1e-12)
    assert sweep.parse_values("100:400:4") == [100, 200, 300, 400]
    assert all(isinstance(v, int) for v in sweep.parse_values("100:400:4"))
    assert sweep.parse_values("0.5:0.5:1") == [0.5]
    assert sweep.parse_grid("data.nu=0:1:3") == ("data.nu", [0.0, 0.5, 1.0])
    for bad in ("0:1:0", "a:b:3", "0:1:2.5", "", "0.1,,0.2"):
        with pytest.raises(InputError):
            sweep.parse_values(bad)
    with pytest.raises(InputError, match="KEY=VALUES"):
        sweep.parse_grid("data.nu")


def test_sweep_toml_points_match_single_configs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SWEEP_TOML)
    base, spec = sweep.load(path)
    assert spec.axes == {"data.nu": [0.1, 0.4], "model.activation": ["relu", "tanh"]} and spec.seeds == 2
    pts = sweep.points(base, spec)
    assert len(pts) == 8 and len({p.hash for p in pts}) == 8
    assert [p.values for p in pts[:3]] == [
        {"data.nu": 0.1, "model.activation": "relu", "seed": 3},
        {"data.nu": 0.1, "model.activation": "relu", "seed": 4},
        {"data.nu": 0.1, "model.activation": "tanh", "seed": 3},
    ]
    for p in pts:  # each point is exactly the config `gradrank analyze FILE --set ... --seed` would use
        single = config.load(
            path, [f"data.nu={p.values['data.nu']}", f'model.activation="{p.values["model.activation"]}"'], seed=p.values["seed"]
        )
        assert p.hash == single.hash() and p.config.output.report is False
    # gradrank analyze ignores the [sweep] table
    assert config.load(path).hash() == config.load(sets=["data.n=60", "data.d=80", "model.width=100"], seed=3).hash()
    # CLI options: --grid overrides an axis, --seeds, --zip
    base, spec = sweep.load(path, grid=["data.nu=0:0.6:3", "model.activation=relu,tanh,gelu"], seeds=1, zip_axes=True)
    zipped = sweep.points(base, spec)
    assert [p.values for p in zipped] == [
        {"data.nu": 0.0, "model.activation": "relu", "seed": 3},
        {"data.nu": 0.3, "model.activation": "tanh", "seed": 3},
        {"data.nu": 0.6, "model.activation": "gelu", "seed": 3},
    ]
    with pytest.raises(InputError, match="equal length"):
        sweep.load(path, grid=["data.nu=0.1,0.2,0.3"], zip_axes=True)
    with pytest.raises(InputError, match="data.nuu"):
        sweep.points(*sweep.load(path, grid=["data.nuu=1,2"]))
    with pytest.raises(InputError, match="model.activation"):
        sweep.points(*sweep.load(path, grid=["model.activation=relu,swish"]))
    bad = tmp_path / "bad.toml"
    bad.write_text('[sweep]\nmodes = "zip"\n')
    with pytest.raises(InputError, match="sweep.modes"):
        sweep.load(bad)


def test_flatten_names_metrics_for_the_table():
    flat = sweeps.flatten(
        {
            "regime": "rank-two",
            "norms": {"S1": 1.5, "S2": 0.5},
            "singular_values": [3.0, 2.0],
            "outlier_labels": ["residue"],
            "config": {"seed": 1},
            "provenance": {"x": 1},
            "trust": {"ok": True, "warnings": ["w"]},
            "history": {"loss": list(range(100))},
        }
    )
    assert flat == {
        "regime": "rank-two",
        "norms.S1": 1.5,
        "norms.S2": 0.5,
        "singular_values.1": 3.0,
        "singular_values.2": 2.0,
        "outlier_labels.1": "residue",
        "trust.ok": True,
    }


def test_train_points_store_what_gradrank_train_stores(tmp_path):
    from gradrank.studies import train as train

    base, spec = sweep.load(
        None, ["data.n=40", "data.d=30", "model.width=50", "train.steps=4", "train.record_every=2"], grid=["model.scaling=mf"]
    )
    spec.command = "train"
    pts = sweep.points(base, spec)
    store = sweeps.open_store(tmp_path / "sw", base, spec, pts, {"name": "inline"})
    for p in pts:
        assert p.config.data.n_test == 10  # train.resolve: a test set, as `gradrank train` would use
        out = sweeps.run_point(sweep.PointTask(str(store.root), p.hash, p.config.to_dict(), "train"))
        assert out.status == "done", out.error
        m = json.loads((store.point_dir(p.hash) / "metrics.json").read_text())
        direct = train.train(p.config)
        assert m["kind"] == "train" and m["config_hash"] == p.hash
        assert m["final"]["train_loss"] == pytest.approx(direct.rows[-1]["train_loss"], rel=1e-10)
        assert (store.point_dir(p.hash) / "trajectory.csv").is_file()
        assert sweeps.run_point(sweep.PointTask(str(store.root), p.hash, p.config.to_dict(), "train")).status == "skipped"
    sweeps.write_table(store)
    rows = read_table(tmp_path / "sw" / "results.csv")
    assert [r["model.scaling"] for r in rows] == ["mf"] and all(r["status"] == "done" for r in rows)
    assert all(float(r["final.train_loss"]) > 0 for r in rows)


def test_local_sweep_records_failures_and_resumes(tmp_path):
    out = tmp_path / "sw"
    # compute.max_memory_gb = 1e-9 makes a point fail inside its run (the memory guard), 0 = default
    args = [
        "sweep",
        *SMALL,
        "--grid",
        "data.nu=0.1,0.4",
        "--grid",
        "compute.max_memory_gb=0,1e-9",
        "--seed",
        2,
        "-j",
        2,
        "-o",
        out,
    ]
    r = gradrank(*args)
    assert r.returncode == 3, r.stderr
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["keys"] == ["data.nu", "compute.max_memory_gb"] and len(manifest["points"]) == 4
    failed = [p["hash"] for p in manifest["points"] if p["values"]["compute.max_memory_gb"] > 0]
    assert "2 point(s) failed" in r.stderr and all(h in r.stderr for h in failed)
    rows = read_table(out / "results.csv")
    assert [row["point"] for row in rows] == [p["hash"] for p in manifest["points"]]
    for row in rows:
        if row["point"] in failed:
            assert row["status"] == "failed" and "max_memory_gb" in row["error"]
            assert "max_memory_gb" in json.loads((out / "points" / f"{row['point']}.failed.json").read_text())["error"]
        else:  # the stored run is exactly a direct analysis of the point's config
            assert row["status"] == "done"
            cfg = config.from_dict(json.loads((out / "points" / row["point"] / "metrics.json").read_text())["config"])
            assert cfg.hash() == row["point"]
            direct = analysis.analyze(cfg).metrics
            for key in ("S1", "S2", "E"):
                assert float(row[f"norms.{key}"]) == pytest.approx(direct["norms"][key], rel=1e-10)
            assert row["regime"] == direct["regime"] and int(row["rank.outliers"]) == direct["rank"]["outliers"]
            assert float(row["alignment.residue.1"]) == pytest.approx(direct["alignment"]["residue"][0], rel=1e-9)
            assert float(row["data.nu"]) == cfg.data.nu
    assert (out / "report.html").is_file()
    done = {
        h: (out / "points" / h / "metrics.json").stat().st_mtime_ns for h in (row["point"] for row in rows) if h not in failed
    }
    st = gradrank("sweep", "--status", out)
    assert st.returncode == 0 and "4 points, 2 done, 2 failed, 0 pending" in st.stdout
    # rerun: finished points are skipped, failed ones retried (and fail again)
    failed_mtime = (out / "points" / f"{failed[0]}.failed.json").stat().st_mtime_ns
    r2 = gradrank(*args, "--no-report")
    assert r2.returncode == 3
    assert "sweep sw: 2/4 done" in r2.stderr  # the progress log starts from the stored points
    assert {h: (out / "points" / h / "metrics.json").stat().st_mtime_ns for h in done} == done
    assert (out / "points" / f"{failed[0]}.failed.json").stat().st_mtime_ns > failed_mtime
    assert len(read_table(out / "results.csv")) == 4
    # the same directory cannot hold a different sweep; bad input is one line, exit 2
    r3 = gradrank(*args[:-2], "--grid", "data.alpha=0,1", "-o", out)
    assert r3.returncode == 2 and "different sweep" in r3.stderr and len(r3.stderr.strip().splitlines()) == 1
    r4 = gradrank("sweep", *SMALL, "--grid", "data.nuu=0.1,0.2", "-o", tmp_path / "bad")
    assert r4.returncode == 2 and "data.nuu" in r4.stderr and not (tmp_path / "bad").exists()
    r5 = gradrank("sweep", "--status", tmp_path / "nothing")
    assert r5.returncode == 2 and "sweep" in r5.stderr


def test_interrupted_sweep_reruns_only_missing_points(tmp_path):
    out = tmp_path / "sw"
    args = [
        "sweep",
        "--set",
        "data.n=300",
        "--set",
        "data.d=400",
        "--set",
        "model.width=500",
        "--grid",
        "data.nu=0:0.7:8",
        "-j",
        1,
        "-o",
        out,
        "--no-report",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradrank", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 90
    while time.time() < deadline and len(list((out / "points").glob("[0-9a-f]*[0-9a-f]"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)
    before = {
        p.name: (p / "metrics.json").stat().st_mtime_ns
        for p in (out / "points").iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }
    assert 2 <= len(before) < 8, "the sweep must be stopped partway"
    time.sleep(1.5)  # an orphaned worker would have written more points by now
    assert {p.name for p in (out / "points").iterdir() if p.is_dir() and not p.name.startswith(".")} == set(before)
    r = gradrank(*args)
    assert r.returncode == 0, r.stderr
    assert f"sweep sw: {len(before)}/8 done" in r.stderr
    after = {
        p.name: (p / "metrics.json").stat().st_mtime_ns
        for p in (out / "points").iterdir()
        if p.is_dir() and not p.name.startswith(".")
    }
    assert len(after) == 8 and all(after[h] == t for h, t in before.items())
    rows = read_table(out / "results.csv")
    assert sorted(row["point"] for row in rows) == sorted(after) and all(row["status"] == "done" for row in rows)
    assert [float(row["data.nu"]) for row in rows] == pytest.approx([0.1 * i for i in range(8)])


def test_local_workers_exit_with_the_sweep_process():
    """A local worker exits when the sweep process that owns it dies (no orphan keeps computing)."""
    from gradrank.sweeps.executors import _alive

    code = (
        "import os\n"
        "from gradrank.sweeps.executors import LocalExecutor\n"
        "print(LocalExecutor(1, 1).start().submit(os.getpid).result(), flush=True)\n"
        "os._exit(0)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    worker = int(proc.stdout.readline())
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and _alive(worker):
        time.sleep(0.1)
    assert not _alive(worker)


def _die_once(task):
    """A point function whose worker dies (like an OOM kill) the first time it runs task 'b'."""
    from gradrank.sweeps.executors import Outcome

    marker = os.path.join(task.root, f"{task.hash}.seen")
    if task.hash == "b" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return Outcome(task.hash, "done")


def test_local_pool_survives_a_dying_worker(tmp_path):
    from gradrank.sweeps.executors import LocalExecutor

    tasks = [sweep.PointTask(str(tmp_path), h, {}, "analyze") for h in "abcd"]
    ex = LocalExecutor(jobs=2, threads=1)
    try:
        outcomes = [o for o in ex.run(_die_once, tasks, sweeps.Store(tmp_path)) if o is not None]
    finally:
        ex.close()
    assert sorted(o.hash for o in outcomes) == ["a", "b", "c", "d"]  # each task reported once
    assert all(o.status == "done" for o in outcomes)
    assert (tmp_path / "b.seen").exists()
