"""The report of a scaling study (scaling.json): the log-log figure of each quantity against n with
its fitted slope and CI beside the predicted exponent."""

from __future__ import annotations

from pathlib import Path

from gradrank.report import figures
from gradrank.report.common import PAPERS, drawer, get, templates_env, write_report
from gradrank.results.files import read_json
from gradrank.studies.scaling import ScalingStudy


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A scaling study directory (scaling.json)."""
    payload = read_json(run_dir / "scaling.json", "scaling directory")
    ScalingStudy.from_dict(payload, str(run_dir / "scaling.json"))
    paper = paper or get(payload.get("config") or {}, "output.paper", "a4")
    return write_report(render_scaling(payload, paper), formats, Path(out_dir or run_dir), paper)


def render_scaling(payload: dict, paper: str = "a4") -> str:
    """The scaling study's HTML report (templates/scaling.html.j2) with its log–log figure."""
    title = get(payload.get("config") or {}, "output.name", "") or f"scaling {payload.get('config_hash', '')}"
    ctx = {"figures": {}, "warnings": []}
    rows, fits = payload.get("rows") or [], payload.get("fits") or {}
    predicted = {c["quantity"]: c.get("predicted") for c in payload.get("comparison") or []}
    quantities = [q for q in ("S1", "S12", "S2", "E", "zeta", "a_mu") if rows and q in rows[0]]
    if quantities:
        drawer(ctx)("scaling", "log-log scaling", figures.scaling, rows, fits, predicted, quantities)
    return templates_env().get_template("scaling.html.j2").render(s=payload, title=title, paper=PAPERS[paper], **ctx)
