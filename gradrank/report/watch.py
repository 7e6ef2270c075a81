"""The monitor's report (gradrank watch, docs/watch.md): for now one table, a row per recorded step
and layer (layers.csv as a page). Heat maps of layer x step are not done yet (docs/watch.md)."""

from __future__ import annotations

from pathlib import Path

from gradrank.monitor import records
from gradrank.report.common import PAPERS, templates_env, write_report


def render_watch(run_dir: Path, paper: str) -> str:
    rec = records.read(Path(run_dir))
    title = f"gradient monitor, {len(rec.layers)} layers, steps {rec.steps[0] if rec.steps else '-'}..{rec.steps[-1] if rec.steps else '-'}"
    return templates_env().get_template("watch.html.j2").render(w=rec, title=title, paper=PAPERS[paper])


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A monitor's run directory (watch.json)."""
    paper = paper or "a4"
    return write_report(render_watch(run_dir, paper), formats, Path(out_dir or run_dir), paper)
