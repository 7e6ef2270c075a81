"""`gradrank report DIR`: the report of any result directory, rendered by its kind's module (run,
sweep, scaling, regpath, layers, advice, onestep; a training run's is the run report with its
trajectory). Each writes report.html / report.pdf where gradrank owns the directory."""

from __future__ import annotations

from pathlib import Path

from gradrank.report import advice, layers, onestep, regpath, run, scaling, sweep, watch
from gradrank.results.files import kind_of_dir

# result kind -> render_dir(dir, formats, out_dir, paper, **options); a new kind adds one line
RENDERERS = {
    "sweep": sweep.render_dir,
    "scaling": scaling.render_dir,
    "regpath": regpath.render_dir,
    "onestep": onestep.render_dir,
    "layers": layers.render_dir,
    "advise": advice.render_dir,
    "analyze": run.render_dir,
    "train": run.render_dir,
    "watch": watch.render_dir,
}


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **options) -> list[Path]:
    """Write report.html / report.pdf for any result directory; returns the files written. A sweep's
    store (sweep.json) is recognised first, then each kind's main file (results.files.MAIN_FILES); `options`
    (e.g. a sweep's metrics) go to that kind's renderer."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and (run_dir / "sweep.json").is_file():
        return sweep.render_dir(run_dir, formats, out_dir, paper, **options)
    return RENDERERS[kind_of_dir(run_dir)](run_dir, formats, out_dir, paper, **options)
