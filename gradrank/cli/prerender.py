"""The report rendered by a worker process (gradrank.report.worker) that a command starts before its
own heavy imports: matplotlib's import overlaps the command's torch import and computation on a
second core. Whatever goes wrong with the worker, the report is rendered in this process as before,
so the files and the errors are those of the in-process path (docs/performance.md)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

# the child imports the parent's modules: same sys.path, then the worker's loop
BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[1]); from gradrank.report import worker; worker.main(sys.argv[2] == 'pdf')"


def _cores() -> int:
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ReportWorker:
    """One worker process; `render(run_dir, formats)` is `render.render_dir` done there, or here when
    the worker is not answering."""

    def __init__(self, pdf: bool = False, command: list[str] | None = None):
        argv = command or [sys.executable, "-c", BOOT, json.dumps(sys.path), "pdf" if pdf else "html"]
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8"
            )
        except OSError:
            self.proc = None

    def _ask(self, run_dir: Path, formats) -> list[Path] | None:
        if self.proc is None:
            return None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            if json.loads(self.proc.stdout.readline()) != {"ready": True}:
                return None
            self.proc.stdin.write(json.dumps({"dir": str(Path(run_dir).resolve()), "formats": list(formats)}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
            if "files" in reply:
                return [Path(p) for p in reply["files"]]
        return None

    def render(self, run_dir: Path, formats) -> list[Path]:
        files = self._ask(run_dir, formats)
        self.close()
        if files is None:
            from gradrank.report import render

            files = render.render_dir(run_dir, formats)
        return files

    def close(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@contextlib.contextmanager
def report_worker(cfg):
    """A ReportWorker's `render` when the config asks for a report and starting one can pay (another
    core, matplotlib not imported here yet); else None, and the report is rendered in process."""
    wanted = cfg.output.report or cfg.output.pdf
    if not wanted or "matplotlib" in sys.modules or _cores() < 2:
        yield None
        return
    worker = ReportWorker(pdf=cfg.output.pdf)
    try:
        yield worker.render
    finally:
        worker.close()
