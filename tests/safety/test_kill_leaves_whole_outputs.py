"""Kill tests: an `analyze` or a sweep killed (SIGKILL, no cleanup possible) at any moment leaves
only complete or absent outputs, never a partial file under a final name; rerunning finishes.

Three fault injections: SIGKILL of a real `gradrank analyze` process at seeded random times,
SIGKILL of a forked writer (analyze's and train's) at every rename of the run-directory write
(so every step of the write is hit, not just the computation), and SIGKILL of a whole
`gradrank sweep` process group."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from _reliability import record

from gradrank import config
from gradrank.io import MARKER

RUN_FILES = {"config.toml", "metrics.json", "provenance.json", "arrays.npz"}
SMALL = ["--set", "data.n=60", "--set", "data.d=80", "--set", "model.width=100", "--set", "output.report=false"]


def check_run(path: Path, expected_hash: str | None = None) -> dict:
    """A complete run directory: every file present and parseable, hashes consistent."""
    assert path.is_dir(), path
    names = {p.name for p in path.iterdir()}
    assert RUN_FILES <= names and not any(n.startswith(".") for n in names - {MARKER}), names
    cfg = config.from_dict(tomllib.loads((path / "config.toml").read_text()))
    metrics = json.loads((path / "metrics.json").read_text())
    prov = json.loads((path / "provenance.json").read_text())
    assert metrics["config_hash"] == prov["config_hash"] == cfg.hash()
    if expected_hash:
        assert cfg.hash() == expected_hash
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert np.array_equal(arrays["singular_values"][: len(metrics["singular_values"])], metrics["singular_values"])
    return metrics


def check_parent(parent: Path, name: str) -> str:
    """Only the final name (complete) or hidden temporaries that no reader takes for a run."""
    state = "absent"
    for p in parent.iterdir():
        if p.name == name:
            check_run(p)
            state = "complete"
        else:
            assert p.name.startswith(f".{name}.") and (".tmp-" in p.name or ".old-" in p.name), p.name
    return state


def stable(metrics: dict) -> dict:
    """Metrics without what legitimately differs between runs (timings, provenance)."""
    return {k: v for k, v in metrics.items() if k not in ("provenance", "timings")}


def gradrank(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gradrank", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_analyze_killed_at_random_times(tmp_path):
    """Kill times uniform over a typical run (~4 s here: start-up, computation, writing); the
    rerun's metrics equal an uninterrupted in-process run of the same config."""
    from gradrank.studies import analyze as analysis

    out, runtime = tmp_path / "run", 4.0
    states = []
    for delay in np.random.default_rng(8).uniform(0, runtime, size=3):
        p = gradrank("analyze", *SMALL, "-o", out, "-q")
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
        states.append(f"{delay:.2f}s: {check_parent(tmp_path, 'run')}")
    p = gradrank("analyze", *SMALL, "-o", out, "-q")
    assert p.wait(timeout=300) == 0
    assert check_parent(tmp_path, "run") == "complete"
    reference = analysis.analyze(config.load(sets=SMALL[1::2]))
    assert json.loads(json.dumps(reference.metrics.to_dict())) == {
        k: v for k, v in check_run(out).items() if k not in ("schema", "config", "provenance")
    }
    record(
        "kill",
        f"SIGKILL of `gradrank analyze` at seeded random times in [0, {runtime:.0f} s] x3",
        "outputs complete or absent after each (" + "; ".join(states) + "); rerun complete, metrics identical",
    )


@pytest.mark.parametrize("kind,existing", [("analyze", False), ("analyze", True), ("train", True)])
def test_write_killed_at_every_rename(tmp_path, small_cfg, kind, existing):
    """Fork a child that writes the run (analyze's or train's directory) and SIGKILLs itself just
    before its k-th os.replace (each file's rename, then the directory's), for every k; the parent
    checks what is left each time, then reruns the write."""
    from gradrank.results import runs as outputs
    from gradrank.studies import analyze as analysis
    from gradrank.studies import train as train

    cfg = small_cfg("output.report=false", "train.steps=4", "train.record_every=2", "train.checkpoint_every=2")
    if kind == "analyze":
        result = analysis.analyze(cfg)
        write = lambda target: outputs.write_run(target, result)  # noqa: E731
    else:  # empirical mu: the population quadrature at every record would dominate this test's time
        trajectory = train.train(cfg.replace(**{"analysis.mu": "empirical"}))
        write = lambda target: outputs.write_train(target, trajectory)  # noqa: E731
    write(tmp_path / "reference")
    parent = tmp_path / "a"
    parent.mkdir()
    out = parent / "run"
    if existing:
        outputs.write_run(out, analysis.analyze(cfg.replace(seed=cfg.seed + 1)))
    real_replace, states, k = os.replace, [], 0
    while True:
        k += 1
        pid = os.fork()
        if pid == 0:  # child: die at the k-th rename, or finish
            calls = [0]

            def replace(src, dst):
                calls[0] += 1
                if calls[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_replace(src, dst)

            os.replace = replace
            try:
                write(out)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        state = check_parent(parent, "run")
        if existing and state == "complete":  # the old run or the new one, never a mixture
            old = json.loads((out / "metrics.json").read_text())["config"]["seed"] == cfg.seed + 1
            assert old or stable(check_run(out)) == stable(check_run(tmp_path / "reference"))
            state += " (old)" if old else " (new)"
        states.append(state)
        if not killed:
            break
    assert k >= 6 and states[-1].startswith("complete")
    assert stable(check_run(out)) == stable(check_run(tmp_path / "reference"))
    assert {p.name for p in out.iterdir()} == {p.name for p in (tmp_path / "reference").iterdir()}
    write(out)  # the rerun after the last kill
    assert check_parent(parent, "run") == "complete"
    record(
        "kill",
        f"SIGKILL before each of the {k - 1} renames of {kind}'s run-directory write "
        f"({'replacing a run' if existing else 'fresh'})",
        "left: " + ", ".join(states[:-1]) + "; rerun complete",
    )


def test_sweep_killed_and_resumed(tmp_path):
    """SIGKILL a local sweep's whole process group (main and workers) mid-way; every point is
    complete or absent, the store reads; rerunning completes exactly the missing points."""
    out = tmp_path / "sw"
    points_n = 40  # enough that the kill lands mid-way however fast one point is
    grid = [
        "--grid",
        f"data.nu=0.1:0.6:{points_n}",
        "--set",
        "data.n=60",
        "--set",
        "data.d=80",
        "--set",
        "model.width=100",
        "--no-report",
        "-j",
        "2",
        "-o",
        out,
    ]
    p = gradrank("sweep", *grid)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some, not all, points are stored
        done = (
            [d for d in (out / "points").glob("*") if d.is_dir() and not d.name.startswith(".")]
            if (out / "points").is_dir()
            else []
        )
        if len(done) >= 2:
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    time.sleep(0.5)  # orphaned workers, if any, notice their parent is gone
    points = out / "points"
    complete = []
    for e in points.iterdir():
        if e.is_dir() and not e.name.startswith("."):
            check_run(e, e.name)
            complete.append(e.name)
        elif e.name.endswith(".failed.json"):
            json.loads(e.read_text())
        else:
            assert e.name.startswith(".") and (".tmp-" in e.name or ".old-" in e.name or e.name.endswith(".tmp")), e.name
    assert 2 <= len(complete) < points_n
    mtimes = {h: (points / h / "metrics.json").stat().st_mtime_ns for h in complete}
    p = gradrank("sweep", *grid)
    assert p.wait(timeout=300) == 0, p.stderr.read()
    final = [e for e in points.iterdir() if e.is_dir() and not e.name.startswith(".")]
    assert len(final) == points_n
    for e in final:
        check_run(e, e.name)
    assert all((points / h / "metrics.json").stat().st_mtime_ns == t for h, t in mtimes.items()), "done points rerun"
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == points_n
    # determinism through the sweep's worker processes: a resumed point equals the point analysed alone
    from gradrank.studies import analyze as analysis

    late = next(e for e in final if e.name not in complete)
    alone = analysis.analyze(config.from_dict(tomllib.loads((late / "config.toml").read_text())))
    assert json.loads(json.dumps(alone.metrics.to_dict())) == {
        k: v for k, v in check_run(late).items() if k not in ("schema", "config", "provenance")
    }
    record(
        "kill",
        f"SIGKILL of a `gradrank sweep -j 2` process group ({points_n} points) after 2+ points were stored",
        f"{len(complete)} complete points, the rest absent or hidden temporaries; rerun ran only the "
        f"{points_n - len(complete)} missing points; results.csv has {points_n} rows; a resumed point's metrics equal "
        "the same config analysed alone, bitwise",
    )
