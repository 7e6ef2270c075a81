"""Bad input through the CLI: exit code 2, one line on stderr naming the field or file, and nothing
written (no run directory, no temporary left over). Also the resource guard, output-path safety
and the never-unpickle rule."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _reliability import record, tree
from numpy.lib import format as npf
from typer.testing import CliRunner

from gradrank.cli.app import app
from gradrank.io import MARKER

TINY = ["--set", "data.n=30", "--set", "data.d=20", "--set", "model.width=25", "--set", "output.report=false"]
ROOT = Path(__file__).resolve().parents[2]


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_refused(res, needle: str, before: set[str], root: Path) -> str:
    """Exit 2, exactly one 'error:' line naming `needle`, no traceback, nothing new under root."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in res.output
    assert tree(root) == before, tree(root) - before
    return lines[0]


# ---------------------------------------------------------------------------- config values

BAD_SETS = [
    ("data.n=0", "data.n"),
    ("data.n=-5", "data.n"),
    ("data.d=0", "data.d"),
    ("model.width=0", "model.width"),
    ("data.nu=-0.1", "data.nu"),
    ("data.nu=nan", "data.nu"),
    ("data.alpha=inf", "data.alpha"),
    ("model.activation=swish", "model.activation"),
    ("data.nn=3", "data.nn"),
    ("data.n=1.5", "data.n"),
    ("data.n=true", "data.n"),
    ("data.n=[1,2]", "data.n"),
    ("loss.kind=hinge", "loss.kind"),
    ("seed=-1", "seed"),
    ("analysis.top_k=0", "analysis.top_k"),
    ("compute.dtype=float16", "compute.dtype"),
    ("data", "--set"),
    ("data..n=3", "data..n"),
    ("model.width.x=1", "model.width.x"),
    ("data.source=file", "data.path"),
]


@pytest.mark.parametrize("setting,needle", BAD_SETS)
def test_bad_set_exit_2_names_field(tmp_path, setting, needle):
    before = tree(tmp_path)
    res = cli("analyze", *TINY, "--set", setting, "-o", tmp_path / "run")
    line = assert_refused(res, needle, before, tmp_path)
    record("config", f"--set {setting}", f"exit 2: {line}")


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[data\nn = 3", "bad.toml"),  # malformed TOML
        ("[data]\nn = 3\nn = 4\n", "bad.toml"),  # duplicate key
        ("[dat]\nn = 3\n", "dat"),  # unknown section, with a suggestion
        ("data = 3\n", "data"),  # a section that is not a table
        ("[model]\nactivation = 3\n", "model.activation"),
        ("seed = 1.5\n", "seed"),
    ],
)
def test_bad_config_file(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    before = tree(tmp_path)
    line = assert_refused(cli("analyze", cfg, *TINY, "-o", tmp_path / "run"), needle, before, tmp_path)
    record("config", f"config file {text!r}", f"exit 2: {line}")


def test_unreadable_config_files(tmp_path):
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    before = tree(tmp_path)
    for path in (tmp_path / "missing.toml", binary, tmp_path):
        line = assert_refused(cli("analyze", path, *TINY, "-o", tmp_path / "run"), str(path), before, tmp_path)
        record("config", f"config path {path.name or 'a directory'}", f"exit 2: {line}")


# ---------------------------------------------------------------------------- data and weight files


def _write_npy_header(path: Path, shape, descr="<f8", payload=b"\0" * 64):
    with open(path, "wb") as fh:
        npf.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(payload)


class Tripwire:
    """Unpickling this object creates a file: proof that a loader did unpickle."""

    path = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _bad_data_files(d: Path, tripwire: Path) -> list[tuple[Path, str, str]]:
    """(file, what is wrong, the text the error line must contain)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 20)), rng.standard_normal(30)
    cases = []

    def npz(name, what, needle, **arrays):
        np.savez(d / name, **arrays)
        cases.append((d / name, what, needle))

    npz("short_y.npz", "y of the wrong length", "y must have shape", X=X, y=y[:-1])
    npz("vec_X.npz", "X one-dimensional", "X must be a 2-d array", X=y, y=y)
    npz("one_row.npz", "X with one row", "at least 2 rows", X=X[:1], y=y[:1])
    npz("nan_X.npz", "NaN in X", "NaN or Inf", X=np.where(X > 2, np.nan, X), y=y)
    npz("inf_y.npz", "Inf in y", "NaN or Inf", X=X, y=np.append(y[:-1], np.inf))
    npz("empty_X.npz", "empty X", "empty", X=np.zeros((0, 20)), y=np.zeros(0))
    npz("no_X.npz", "no X array", "missing array 'X'", Z=X)
    npz("complex.npz", "complex X", "must be numeric", X=X.astype(complex), y=y)
    npz("strings.npz", "string X", "must be numeric", X=np.array([["a", "b"], ["c", "d"]]), y=y[:2])
    npz("bad_q.npz", "q of the wrong length", "q must have shape", X=X, y=y, q=np.ones(3))
    npz("labels.npz", "logistic loss with real-valued y", "labels", X=X, y=y)
    Tripwire.path = str(tripwire)
    obj = np.empty(2, dtype=object)
    obj[:] = [Tripwire(), Tripwire()]
    np.savez(d / "pickled.npz", X=obj, y=y)
    cases.append((d / "pickled.npz", "object array whose unpickling would run code", "unpickling"))
    np.save(d / "pickled.npy", obj, allow_pickle=True)
    cases.append((d / "pickled.npy", "object .npy", "unpickling"))
    with open(d / "raw_pickle.npy", "wb") as fh:
        pickle.dump(Tripwire(), fh)
    cases.append((d / "raw_pickle.npy", "a bare pickle named .npy", "raw_pickle.npy"))
    np.savez(d / "good.npz", X=X, y=y)
    raw = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    cases.append((d / "truncated.npz", "truncated .npz", "truncated"))
    (d / "garbage.npz").write_bytes(os.urandom(300))
    cases.append((d / "garbage.npz", "random bytes as .npz", "garbage.npz"))
    np.save(d / "good.npy", X)
    (d / "truncated.npy").write_bytes((d / "good.npy").read_bytes()[:200])
    cases.append((d / "truncated.npy", "truncated .npy", "truncated"))
    _write_npy_header(d / "huge.npy", (10**7, 10**7))
    cases.append((d / "huge.npy", "header declaring 10^7 x 10^7 (800 TB)", "(10000000, 10000000)"))
    _write_npy_header(d / "negative.npy", (-5, 3))
    cases.append((d / "negative.npy", "header with a negative shape", "negative"))
    (d / "empty.csv").write_text("")
    cases.append((d / "empty.csv", "empty CSV", "empty"))
    (d / "words.csv").write_text("a,b\n1,x\n2,y\n")
    cases.append((d / "words.csv", "non-numeric CSV", "row 2, column 2"))
    (d / "ragged.csv").write_text("1,2,3\n4,5\n")
    cases.append((d / "ragged.csv", "ragged CSV", "ragged.csv"))
    (d / "data.txt").write_text("1,2\n")
    cases.append((d / "data.txt", "unsupported suffix", "unsupported file type"))
    cases.append((d / "absent.npz", "missing file", "no such file"))
    return cases


def test_bad_data_files_exit_2_nothing_written(tmp_path):
    data_dir, work = tmp_path / "data", tmp_path / "work"
    data_dir.mkdir(), work.mkdir()
    tripwire = tmp_path / "unpickled"
    cases = _bad_data_files(data_dir, tripwire)
    for path, what, needle in cases:
        extra = ["--set", "loss.kind=logistic"] if "logistic" in what else []
        before = tree(tmp_path)
        res = cli("decompose", "--data", path, *TINY, *extra, "-o", work / "run")
        line = assert_refused(res, needle, before, tmp_path)
        assert str(path) in line, line
        record("data file", what, f"exit 2: {line.replace(str(data_dir) + '/', '')}")
    assert not tripwire.exists(), "an object array was unpickled"


def test_huge_member_inside_npz_refused_before_allocation(tmp_path):
    """A valid zip whose X.npy header declares 10^12 doubles: refused from the header alone."""
    import zipfile

    path = tmp_path / "huge.npz"
    hdr = tmp_path / "X.npy"
    _write_npy_header(hdr, (10**6, 10**6))
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(hdr, "X.npy")
    hdr.unlink()
    before = tree(tmp_path)
    line = assert_refused(cli("decompose", "--data", path, *TINY, "-o", tmp_path / "run"), "(1000000, 1000000)", before, tmp_path)
    record("data file", ".npz member declaring 10^6 x 10^6", f"exit 2: {line.replace(str(tmp_path) + '/', '')}")


def test_bad_weights(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((30, 20)), y=rng.standard_normal(30))
    for name, arrays, needle in [
        ("w_shape.npz", {"W": np.ones((25, 19)), "a": np.ones(25)}, "W must have shape (m, 20)"),
        ("a_shape.npz", {"W": np.ones((25, 20)), "a": np.ones(24)}, "a must have shape (25,)"),
        ("no_a.npz", {"W": np.ones((25, 20))}, "missing array 'a'"),
        ("nan_W.npz", {"W": np.full((25, 20), np.nan), "a": np.ones(25)}, "NaN or Inf"),
    ]:
        np.savez(tmp_path / name, **arrays)
        before = tree(tmp_path)
        res = cli("decompose", "--data", tmp_path / "d.npz", "--weights", tmp_path / name, *TINY, "-o", tmp_path / "run")
        line = assert_refused(res, needle, before, tmp_path)
        record("weights file", name, f"exit 2: {line.replace(str(tmp_path) + '/', '')}")


def test_valid_file_round_trip(tmp_path):
    """The other side of the property: a good file gives a complete run."""
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", X=rng.standard_normal((30, 20)), y=rng.standard_normal(30))
    res = cli("decompose", "--data", tmp_path / "d.npz", *TINY, "-o", tmp_path / "run", "-q")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["sizes"] == {"n": 30, "d": 20, "m": 25} and m["trust"]["ok"]


# ---------------------------------------------------------------------------- resource guard


@pytest.mark.parametrize("command,out", [("analyze", "run"), ("generate", "data.npz"), ("train", "run")])
def test_resource_guard_refuses_before_allocating(tmp_path, command, out):
    before = tree(tmp_path)
    res = cli(command, "--set", "data.n=10000000", "--set", "data.d=1000000", "-o", tmp_path / out)
    line = assert_refused(res, "data.n", before, tmp_path)
    assert "GiB" in line and "compute.max_memory_gb" in line
    record(
        "resource guard", f"gradrank {command} with data.n = 10^7, data.d = 10^6 (~10^5 GiB)", f"exit 2 before allocating: {line}"
    )


def test_resource_guard_limit_and_force(tmp_path):
    limit = ["--set", "compute.max_memory_gb=0.000001"]
    before = tree(tmp_path)
    assert_refused(cli("analyze", *TINY, *limit, "-o", tmp_path / "run"), "compute.max_memory_gb", before, tmp_path)
    res = cli("analyze", *TINY, *limit, "--force", "-o", tmp_path / "run", "-q")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "run" / "metrics.json").is_file()
    record("resource guard", "compute.max_memory_gb = 1e-6 GiB, then --force", "exit 2, then exit 0 with --force")


def test_resource_guard_reads_file_headers(tmp_path):
    """decompose takes n, d from the data file: a 4000 x 3000 X (a sparse file of the declared size)
    with width 10^6 exceeds a 5 GiB limit and is refused from the header, before the data are read."""
    path = tmp_path / "big.npy"
    _write_npy_header(path, (4000, 3000), payload=b"")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size + 4000 * 3000 * 8)
    before = tree(tmp_path)
    res = cli(
        "decompose", "--data", path, "--set", "model.width=1000000", "--set", "compute.max_memory_gb=5", "-o", tmp_path / "run"
    )
    line = assert_refused(res, "GiB", before, tmp_path)
    assert "4000, 3000, 1000000" in line, line
    record("resource guard", "decompose on a 4000 x 3000 .npy, width 10^6", f"exit 2 from the header: {line}")


PEAK = """
import sys
from gradrank import config
from gradrank.studies import analyze as analysis
from gradrank.config.resources import estimate_bytes
def hwm():  # this process image's peak RSS (ru_maxrss would carry the forking parent's over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
analysis.analyze(config.load(sets=["data.n=60", "data.d=80", "model.width=100", "output.report=false"]))
base = hwm()
cfg = config.load(sets=["data.n=1200", "data.d=1600", "model.width=2000", "output.report=false"])
analysis.analyze(cfg)
print(hwm() - base, estimate_bytes(1200, 1600, 2000, "float64"))
"""


def test_memory_estimate_bounds_measured_peak():
    """The guard's estimate is an upper bound of the real peak (max RSS growth of a fresh process
    over a tiny warm-up run), and not a wildly pessimistic one."""
    p = subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True, timeout=300)
    measured, estimate = map(int, p.stdout.split())
    assert measured <= estimate <= 3 * measured, (measured, estimate)
    record(
        "resource guard",
        "estimate vs measured peak, n = 1200, d = 1600, m = 2000 (float64)",
        f"measured {measured / 2**20:.0f} MiB <= estimate {estimate / 2**20:.0f} MiB",
    )


# ---------------------------------------------------------------------------- outputs


def test_output_never_replaces_foreign_paths(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("precious")
    adir = tmp_path / "mine"
    adir.mkdir()
    (adir / "thesis.tex").write_text("precious")
    sweep = tmp_path / "sweep"
    (sweep / "points").mkdir(parents=True)
    for name in ("sweep.json", "results.csv", "config.toml"):
        (sweep / name).write_text("{}")
    before = tree(tmp_path)
    for target, what in [
        (afile, "a file"),
        (adir, "a foreign directory"),
        (afile / "run", "below a file"),
        (sweep, "a sweep directory"),
    ]:
        line = assert_refused(
            cli("analyze", *TINY, "-o", target), str(target.relative_to(tmp_path)).split("/")[0], before, tmp_path
        )
        record("outputs", f"-o {target.relative_to(tmp_path)} ({what})", f"exit 2: {line.replace(str(tmp_path) + '/', '')}")
    assert afile.read_text() == "precious" and (adir / "thesis.tex").read_text() == "precious"


def test_generate_bad_output_paths(tmp_path):
    (tmp_path / "afile").write_text("precious")
    (tmp_path / "adir.npz").mkdir()
    before = tree(tmp_path)
    for target in ("afile/x.npz", "adir.npz", "x.txt"):
        res = cli("generate", "--set", "data.n=30", "--set", "data.d=20", "-o", tmp_path / target)
        line = assert_refused(res, target, before, tmp_path)
        record("outputs", f"gradrank generate -o {target}", f"exit 2: {line.replace(str(tmp_path) + '/', '')}")
    assert (tmp_path / "afile").read_text() == "precious"


def test_rerun_replaces_previous_run(tmp_path):
    out = tmp_path / "run"
    assert cli("analyze", *TINY, "--seed", 1, "-o", out, "-q").exit_code == 0
    assert cli("analyze", *TINY, "--seed", 2, "-o", out, "-q").exit_code == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 2
    assert tree(tmp_path) == {
        "run",
        *(f"run/{f}" for f in ("config.toml", "metrics.json", "provenance.json", "arrays.npz", MARKER)),
    }


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", ".." + "/x" * 200])
def test_output_name_cannot_escape_runs(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    res = cli("analyze", *TINY, "--set", f"output.name={json.dumps(name)}", "-q")
    assert res.exit_code == 0, res.output
    made = Path(res.stdout.strip().splitlines()[-1])
    assert made.resolve().parent == (tmp_path / "runs").resolve(), made
    assert len(made.name) <= 64 + 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    record("security", f"output.name = {name[:20]!r}{'...' if len(name) > 20 else ''}", f"run written to runs/{made.name[:30]}")


# ---------------------------------------------------------------------------- real processes and static checks


def test_subprocess_exit_codes_no_traceback(tmp_path):
    """The real entry point: exit 2 and one line for bad input (a good run: see test_kill_leaves_whole_outputs.py)."""
    for args, code in [
        (["analyze", "--set", "data.nu=-1"], 2),
        (["decompose", "--data", str(tmp_path / "none.npz")], 2),
        (["analyze", "--bogus"], 2),
        (["analyze", "--seed", "x"], 2),
        (["decompose"], 2),
    ]:
        p = subprocess.run([sys.executable, "-m", "gradrank", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr
        if code == 2:
            assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
        record(
            "process",
            "python -m gradrank " + " ".join(a.replace(str(tmp_path) + "/", "") for a in args),
            f"exit {code}" + (f": {p.stderr.strip()}" if code else ""),
        )


def test_no_unsafe_deserialisation_in_source():
    """torch.load only with weights_only=True, np.load only with allow_pickle=False, no pickle module."""
    bad = []
    for path in sorted((ROOT / "gradrank").rglob("*.py")):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path.name}: {m.group(0)}")
        for m in re.finditer(r"np\.load\(([^)]*)\)", text):
            if "allow_pickle=False" not in m.group(1):
                bad.append(f"{path.name}: {m.group(0)}")
        if re.search(r"^\s*(import pickle|from pickle|import cloudpickle|import dill)", text, re.M):
            bad.append(f"{path.name}: imports a pickle module")
    assert not bad, bad


@pytest.mark.browser
def test_hostile_file_name_is_text_in_report(tmp_path):
    """A data file whose name is HTML: the report (rendered in Debian's chromium) shows it as text
    and runs nothing. (output.name is covered in test_report_browser.py.)"""
    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), "Debian's chromium is required at /usr/bin/chromium (.ci/run installs it)"
    from playwright.sync_api import sync_playwright

    evil = '<img src=x onerror="window.__xss=1"><svg onload="window.__xss=2">'
    data = tmp_path / f"{evil}.npz"
    rng = np.random.default_rng(3)
    np.savez(data, X=rng.standard_normal((30, 20)), y=rng.standard_normal(30))
    out = tmp_path / "run"
    res = cli("decompose", "--data", data, "--set", "model.width=25", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto((out / "report.html").as_uri(), wait_until="load")
            assert page.evaluate("window.__xss") is None
            assert page.locator("img").count() == 0 and page.locator("svg[onload]").count() == 0
            assert evil in page.inner_text("body")
        finally:
            browser.close()
    record(
        "security",
        "data file named '<img onerror=...><svg onload=...>.npz', report opened in chromium",
        "shown as text; no script ran, no element injected",
    )


def test_memory_guard_counts_stacked_noise_draws():
    """noise_mode = average stacks K draws (nK rows): the estimate grows with K."""
    from gradrank import config
    from gradrank.config import resources
    from gradrank.errors import InputError

    base = config.load(sets=["regularizer.input_noise=0.1", "regularizer.noise_mode=average", "regularizer.noise_draws=1"])
    many = base.replace(**{"regularizer.noise_draws": 50})
    assert resources.check_memory(many) > 10 * resources.check_memory(base)
    tight = many.replace(**{"compute.max_memory_gb": resources.check_memory(base) * 2 / 2**30})
    with pytest.raises(InputError, match="50 noise draws"):
        resources.check_memory(tight)
