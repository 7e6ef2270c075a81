"""The report worker (gradrank.cli.prerender, gradrank.report.worker): it writes the very bytes the
in-process renderer writes, and whatever goes wrong with it, the in-process path takes over."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from gradrank import api
from gradrank.cli import prerender
from gradrank.errors import InputError
from gradrank.report import render


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """One analysis saved twice without a report: one copy for the worker, one for this process."""
    base = tmp_path_factory.mktemp("pre")
    result = api.analyze(overrides={"data.n": 60, "data.d": 80, "model.width": 100, "output.report": False})
    api.save(result, base / "a")
    shutil.copytree(base / "a", base / "b")
    return base / "a", base / "b"


def test_worker_writes_the_in_process_bytes(run_dirs):
    a, b = run_dirs
    worker = prerender.ReportWorker()
    try:
        files = worker._ask(a, ["html"])  # the worker's own answer: None would mean the fallback ran
    finally:
        worker.close()
    assert files == [(a / "report.html").resolve()]
    render.render_dir(b, ["html"])
    assert (a / "report.html").read_bytes() == (b / "report.html").read_bytes()
    assert worker.proc is None


def test_a_worker_that_never_answers_falls_back(run_dirs, tmp_path):
    a, _ = run_dirs
    target = tmp_path / "run"
    shutil.copytree(a, target, ignore=shutil.ignore_patterns("report.*"))
    worker = prerender.ReportWorker(command=[sys.executable, "-c", "pass"])
    assert worker.render(target, ["html"]) == [target / "report.html"]
    assert (target / "report.html").read_bytes() == (a / "report.html").read_bytes()


def test_a_worker_that_cannot_start_falls_back(run_dirs, tmp_path):
    a, _ = run_dirs
    target = tmp_path / "run"
    shutil.copytree(a, target, ignore=shutil.ignore_patterns("report.*"))
    worker = prerender.ReportWorker(command=[str(tmp_path / "no-such-program")])
    assert worker.proc is None
    assert worker.render(target, ["html"]) == [target / "report.html"]


def test_a_failed_render_raises_the_in_process_error(tmp_path):
    """The worker answers an error; the same request here raises it as the user would see it."""
    (tmp_path / "notes.txt").write_text("not a result")
    worker = prerender.ReportWorker()
    with pytest.raises(InputError, match="not a gradrank result directory"):
        worker.render(tmp_path, ["html"])
    assert not (tmp_path / "report.html").exists()


def test_worker_only_when_it_can_pay(small_cfg, monkeypatch):
    import matplotlib  # noqa: F401  (imported here: no worker is started)

    with prerender.report_worker(small_cfg()) as r:
        assert r is None
    monkeypatch.delitem(sys.modules, "matplotlib")
    with prerender.report_worker(small_cfg("output.report=false")) as r:
        assert r is None
    monkeypatch.setattr(prerender, "_cores", lambda: 1)
    with prerender.report_worker(small_cfg()) as r:
        assert r is None
    monkeypatch.setattr(prerender, "_cores", lambda: 2)
    with prerender.report_worker(small_cfg()) as r:
        assert r is not None and r.__self__.proc is not None
        proc = r.__self__.proc
    assert proc.poll() is not None  # closed and reaped on leaving the block


def test_cli_process_report_equals_gradrank_report(tmp_path):
    """A real `gradrank analyze` process (worker path) and `gradrank report` of the same directory."""
    out = tmp_path / "r"
    sets = ["--set", "data.n=60", "--set", "data.d=80", "--set", "model.width=100"]
    subprocess.run([sys.executable, "-m", "gradrank", "analyze", *sets, "-o", str(out), "-q"], check=True, capture_output=True)
    first = (out / "report.html").read_bytes()
    subprocess.run([sys.executable, "-m", "gradrank", "report", str(out)], check=True, capture_output=True)
    assert (out / "report.html").read_bytes() == first
