"""The three critical safety rules: gradrank replaces only what it provably wrote; no config value
reaches a job script outside the scheduler's directives; every input file is part of the run's
identity (path and sha256 in the resolved config and its hash)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tomllib
from pathlib import Path

import numpy as np
import pytest
from _reliability import tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.errors import InputError
from gradrank.io import MARKER
from gradrank.sweeps import executors

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--set", "data.n=40", "--set", "data.d=30", "--set", "model.width=50"]


def cli(*args, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with its content hash (directories as entries too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def refused(res, before: dict, root: Path) -> str:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert snapshot(root) == before, "a refused command changed files"
    return lines[0]


# ---------------------------------------------------------------------------- 1. -o never deletes a user's directory


def test_issue_repro_project_directory_is_refused(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "thesis.tex").write_text("notes")
    shutil.copy(ROOT / "sample_configs" / "default.toml", proj / "config.toml")
    before = snapshot(tmp_path)
    line = refused(cli("analyze", proj / "config.toml", *TINY, "-o", proj, "-q"), before, tmp_path)
    assert str(proj) in line
    (proj / "metrics.json").write_text("{}")  # looks like an old run: still not ours
    before = snapshot(tmp_path)
    refused(cli("analyze", *TINY, "-o", proj, "-q"), before, tmp_path)


@pytest.mark.parametrize("cwd_state", ["with files", "empty"])
def test_empty_output_path_never_means_the_current_directory(tmp_path, cwd_state):
    work = tmp_path / "work"
    work.mkdir()
    if cwd_state == "with files":
        (work / "thesis.tex").write_text("notes")
    before = snapshot(tmp_path)
    refused(cli("analyze", *TINY, "-o", "", "-q", cwd=work), before, tmp_path)
    refused(cli("analyze", *TINY, "-o", ".", "-q", cwd=work), before, tmp_path)
    refused(cli("analyze", *TINY, "-o", "..", "-q", cwd=work), before, tmp_path)


def _writer_commands(tmp_path: Path) -> dict[str, list]:
    data = tmp_path / "inputs" / "d.npz"
    if not data.exists():
        data.parent.mkdir(exist_ok=True)
        rng = np.random.default_rng(0)
        np.savez(data, X=rng.standard_normal((40, 30)), y=rng.standard_normal(40))
    fast = [*TINY, "--set", "output.report=false"]
    return {
        "analyze": ["analyze", *fast, "-q"],
        "decompose": ["decompose", "--data", data, "--set", "model.width=50", "--set", "output.report=false", "-q"],
        "train": ["train", *TINY, "--set", "train.steps=2", "--set", "train.record_every=1", "--no-report", "-q"],
        "regpath": ["regpath", *fast, "--grid", "weight_decay=0.1", "--seeds", "0", "-q"],
        "scaling": ["scaling", "--n", "30,40", "--seeds", "1", *TINY, "--set", "output.report=false", "-q"],
        "sweep": ["sweep", "--grid", "seed=0", *TINY, "--no-report", "-j", "1"],
    }


@pytest.mark.parametrize("command", ["analyze", "decompose", "train", "regpath", "scaling", "sweep"])
def test_every_writer_refuses_a_foreign_directory_and_keeps_its_own(tmp_path, command):
    args = _writer_commands(tmp_path)[command]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.toml").write_text("seed = 1\n")
    (foreign / "metrics.json").write_text("{}")
    (foreign / "sweep.json").write_text("{}")
    before = snapshot(tmp_path)
    refused(cli(*args, "-o", foreign), before, tmp_path)

    mine = tmp_path / "mine"
    res = cli(*args, "-o", mine)
    assert res.exit_code == 0, res.output
    res = cli(*args, "-o", mine)  # its own output: replaced (a sweep resumes its store)
    assert res.exit_code == 0, res.output
    if command == "sweep":
        return
    assert (mine / MARKER).is_file()
    for victim in (mine / "notes.txt", mine / "config.toml"):  # a file added, then one edited
        victim.write_text("the user's own words\n")
        before = snapshot(tmp_path)
        line = refused(cli(*args, "-o", mine), before, tmp_path)
        assert "did not write" in line, line
        if victim.name == "notes.txt":
            victim.unlink()


def test_report_out_and_generate_out(tmp_path):
    run = tmp_path / "run"
    assert cli("analyze", *TINY, "--no-report", "-o", run, "-q").exit_code == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "report.html").write_text("<p>mine</p>")
    before = snapshot(tmp_path)
    refused(cli("report", run, "-o", foreign), before, tmp_path)
    (run / "report.html").write_text("<p>a report the user edited</p>")
    before = snapshot(tmp_path)
    refused(cli("report", run), before, tmp_path)
    (run / "report.html").unlink()
    assert cli("report", run).exit_code == 0  # into its own run directory, recorded in the marker
    assert "report.html" in json.loads((run / MARKER).read_text())["files"]
    assert cli("report", run).exit_code == 0  # and rerendered over its own file
    assert cli("analyze", *TINY, "--no-report", "-o", run, "-q").exit_code == 0  # the run stays replaceable

    out = tmp_path / "g.npz"
    assert cli("generate", *TINY, "-o", out).exit_code == 0
    before = snapshot(tmp_path)
    refused(cli("generate", *TINY, "-o", out), before, tmp_path)  # never overwrites, not even its own


def test_output_directory_that_is_a_link_or_fifo_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "fifo")
    before = snapshot(tmp_path)
    for name in ("link", "dangling", "fifo"):
        refused(cli("analyze", *TINY, "-o", tmp_path / name, "-q"), before, tmp_path)


# ---------------------------------------------------------------------------- 2. config values never reach a shell


HOSTILE = st.one_of(
    st.text(min_size=1, max_size=30).filter(lambda s: any(c in s for c in "\n\r;&|`$'\" \t#<>()\\*")),
    st.sampled_from(
        [
            "debug\ntouch /tmp/x\n#",
            "debug; rm -rf ~",
            "$(id)",
            "4G\n#SBATCH --wrap=id",
            "a b",
            "",
            "--wrap=id",
            "-p x",
            "1:00:00\nid",
        ]
    ),
)
SLURM_STR, DASK_STR = ("partition", "time", "mem"), ("jobqueue", "memory", "queue", "walltime")


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(["slurm", "dask"]), data=st.data())
def test_hostile_scheduler_values_are_refused_when_read(kind, data, tmp_path_factory):
    key = data.draw(st.sampled_from(SLURM_STR if kind == "slurm" else DASK_STR))
    value = data.draw(HOSTILE)
    tmp = tmp_path_factory.mktemp("hostile")
    path = tmp / "sweep.toml"
    path.write_text(f"[sweep.{kind}]\n{key} = {config.toml_string(value)}\n", encoding="utf-8")
    from gradrank.sweeps import spec as sweep

    with pytest.raises(InputError) as err:
        sweep.read_spec(path)
    assert f"sweep.{kind}.{key}" in str(err.value) and "\n" not in str(err.value)
    before = tree(tmp)
    res = cli("sweep", path, "--grid", "seed=0", "-o", tmp / "out")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert tree(tmp) == before  # nothing written or started


def test_hostile_command_line_flags_are_refused(tmp_path):
    for flag, value in [
        ("--partition", "debug\nid"),
        ("--mem", "4G;id"),
        ("--time", "1:00\nid"),
        ("--scheduler", "tcp://h:1\nid"),
    ]:
        before = tree(tmp_path)
        executor = "dask" if flag == "--scheduler" else "slurm"
        res = cli("sweep", "--grid", "seed=0", *TINY, "--executor", executor, flag, value, "-o", tmp_path / "o")
        assert res.exit_code == 2 and "\n" not in res.output.strip(), res.output
        assert tree(tmp_path) == before


def _fake_sbatch(bin_dir: Path, capture: Path) -> None:
    """sbatch that keeps the job script, and an srun that submitit only looks for: no SLURM needed."""
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("sbatch", f'cp "$1" "{capture}"\necho "Submitted batch job 4242"'), ("srun", "exit 0")):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)


def _sbatch_script(tmp: Path, table: dict) -> list[str]:
    """The job script submitit writes for our SlurmExecutor with these options (sbatch faked)."""
    import submitit

    ex = executors.make("slurm", tmp / "root", slurm=table)
    capture = tmp / "captured.sh"
    _fake_sbatch(tmp / "bin", capture)
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{tmp / 'bin'}:{old}"
    try:
        sub = submitit.AutoExecutor(folder=ex.folder, cluster="slurm")
        sub.update_parameters(**ex._parameters())
        sub.map_array(abs, [1, 2])
    finally:
        os.environ["PATH"] = old
    return capture.read_text().splitlines()


def _dask_script(table: dict) -> list[str]:
    cls, options = executors.jobqueue_class_and_options(table)
    return cls.job_cls(scheduler="tcp://127.0.0.1:1", name="w", **options).job_script().splitlines()


def _body(lines: list[str], tmp: Path) -> list[str]:
    """Lines outside the scheduler's directives, with the run's own folder and the worker's thread
    count and memory limit (numbers dask computes from validated options) masked."""
    out = []
    for ln in lines:
        if ln.startswith(("#SBATCH", "#PBS")):
            continue
        words = ln.replace(str(tmp), "TMP").split()
        out.append(" ".join("N" if i and words[i - 1] in ("--memory-limit", "--nthreads") else w for i, w in enumerate(words)))
    return out


VALID = {
    "partition": st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}(,[a-z][a-z0-9]{0,5})?\Z"),
    "time": st.one_of(st.integers(1, 5000), st.from_regex(r"\A([1-9]-)?[0-9]{1,2}:[0-5][0-9]:[0-5][0-9]\Z")),
    "mem": st.from_regex(r"\A[1-9][0-9]{0,3}(G|M|GB|MB)\Z"),
    "gpus": st.integers(0, 4),
    "array_parallelism": st.integers(1, 64),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.fixed_dictionaries({}, optional=VALID))
def test_no_line_outside_sbatch_directives_comes_from_config(table, tmp_path):
    tmp = tmp_path / hashlib.sha256(repr(sorted(table.items())).encode()).hexdigest()[:8]
    tmp.mkdir(exist_ok=True)
    lines = _sbatch_script(tmp, table)
    assert _body(lines, tmp) == _body(_sbatch_script(tmp, {}), tmp)
    for value in map(str, table.values()):
        assert all(ln.startswith("#SBATCH") for ln in lines if value in ln and len(value) > 3), value


@settings(max_examples=25, deadline=None)
@given(
    table=st.fixed_dictionaries(
        {},
        optional={
            "jobqueue": st.sampled_from(["slurm", "pbs"]),
            "cores": st.integers(1, 8),
            "memory": st.from_regex(r"\A[1-9][0-9]{0,2}(GB|MB|GiB)\Z"),
            "queue": st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}\Z"),
            "walltime": st.from_regex(r"\A[0-9]{2}:[0-5][0-9]:[0-5][0-9]\Z"),
        },
    )
)
def test_no_line_outside_jobqueue_directives_comes_from_config(table):
    lines = _dask_script(table)
    default = _dask_script({"jobqueue": table.get("jobqueue", "slurm")})
    norm = Path("/nonexistent")
    assert _body(lines, norm) == _body(default, norm)


# ---------------------------------------------------------------------------- 3. input files are part of the identity


def _arrays(tmp_path: Path):
    rng = np.random.default_rng(1)
    data = tmp_path / "d.npz"
    np.savez(data, X=rng.standard_normal((40, 30)), y=rng.standard_normal(40))
    for i in (1, 2):
        np.savez(tmp_path / f"w{i}.npz", W=rng.standard_normal((50, 30)) / 6, a=np.sign(rng.standard_normal(50)))
    return data


def test_weights_and_data_files_enter_the_config_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _arrays(tmp_path)
    made = []
    for w in ("w1.npz", "w2.npz"):
        res = cli("decompose", "--data", "d.npz", "--weights", w, "--set", "output.report=false", "-q")
        assert res.exit_code == 0, res.output
        made.append(Path(res.stdout.strip().splitlines()[-1]))
    assert made[0] != made[1] and made[0].is_dir() and made[1].is_dir()  # two runs, nothing replaced
    cfgs = [tomllib.loads((m / "config.toml").read_text()) for m in made]
    for cfg, w in zip(cfgs, ("w1.npz", "w2.npz")):
        assert cfg["model"]["weights"] == str(tmp_path / w)
        assert cfg["model"]["weights_sha256"] == hashlib.sha256((tmp_path / w).read_bytes()).hexdigest()
        assert cfg["data"]["path"] == str(data)
        assert cfg["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    hashes = [json.loads((m / "metrics.json").read_text())["config_hash"] for m in made]
    assert hashes[0] != hashes[1]

    # the saved config reproduces the run: same hash, same metrics
    res = cli("analyze", made[1] / "config.toml", "-o", tmp_path / "again", "-q")
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    first = json.loads((made[1] / "metrics.json").read_text())
    assert again["config_hash"] == hashes[1] and again["norms"] == first["norms"]

    # a changed input file is caught, naming the key
    np.savez(tmp_path / "w2.npz", W=np.ones((50, 30)) / 6, a=np.ones(50))
    res = cli("analyze", made[1] / "config.toml", "-o", tmp_path / "changed", "-q")
    assert res.exit_code == 2 and "model.weights_sha256" in res.output, res.output
    assert not (tmp_path / "changed").exists()


def test_data_content_changes_the_hash_not_only_the_name(tmp_path):
    data = _arrays(tmp_path)
    h1 = config.load(overrides={"data.source": "file", "data.path": str(data)}).hash()
    np.savez(data, X=np.random.default_rng(5).standard_normal((40, 30)), y=np.zeros(40))
    h2 = config.load(overrides={"data.source": "file", "data.path": str(data)}).hash()
    assert h1 != h2


def test_an_input_that_is_not_a_regular_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "fifo.npz")
    with pytest.raises(InputError, match="data.path.*not a regular file"):
        config.load(overrides={"data.source": "file", "data.path": str(tmp_path / "fifo.npz")})


def test_critical_cases_recorded():
    """Rows for docs/reliability.md: the critical tests above passed when this runs (same module, in order)."""
    from _reliability import record

    record(
        "critical",
        "issue repro: -o on a project directory holding config.toml / metrics.json",
        "exit 2 naming it; every file kept",
    )
    record(
        "critical",
        "-o '' with the current directory full or empty (2 cases)",
        "exit 2: an empty path never means the current directory",
    )
    record(
        "critical",
        "analyze, decompose, train, regpath, scaling, sweep -o on a foreign directory, then on their own (6 commands)",
        "foreign: exit 2, untouched; own: replaced",
    )
    record(
        "critical",
        "hostile [sweep.slurm] / [sweep.dask] values (150 hypothesis examples)",
        "exit 2 naming the key when the config is read",
    )
    record(
        "critical",
        "valid scheduler tables rendered into sbatch and jobqueue scripts (50 hypothesis examples)",
        "no line outside the scheduler's directives comes from config",
    )
    record(
        "critical",
        "decompose with two weights files / two data files of the same name",
        "different config hashes and run directories; sha256 in config.toml",
    )
