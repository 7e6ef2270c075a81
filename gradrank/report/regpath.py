"""The report of a regularisation path (path.json + path.csv): each regulariser's verdict, the path
figure and the per-strength means over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradrank.errors import InputError
from gradrank.report import figures
from gradrank.report.common import (
    PAPERS,
    config_sections,
    drawer,
    g,
    get,
    mean_sd,
    most_common,
    num,
    read_csv,
    templates_env,
    write_report,
)
from gradrank.results.files import read_json
from gradrank.results.regpath import RegPath


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A regularisation path directory (path.json + path.csv)."""
    doc = read_json(run_dir / "path.json", "regpath directory")
    RegPath.from_dict(doc, str(run_dir / "path.json"))
    rows = read_csv(run_dir / "path.csv")
    if not rows:
        raise InputError(f"{run_dir / 'path.csv'}: missing or empty (not a finished regpath directory)")
    paper = paper or get(doc.get("config") or {}, "output.paper", "a4")
    html = templates_env().get_template("regpath.html.j2").render(**regpath_context(doc, rows), paper=PAPERS[paper])
    return write_report(html, formats, Path(out_dir or run_dir), paper)


def regpath_context(doc: dict, rows: list[dict[str, str]]) -> dict:
    """The regularisation path report: verdicts, the path figure, per-strength means over seeds."""
    cfg = doc.get("config") or {}
    ctx = {
        "title": get(cfg, "output.name") or f"regularisation path {doc.get('config_hash', '')}",
        "doc": doc,
        "summary": doc.get("summary") or {},
        "steps": doc.get("steps", 0),
        "seeds": doc.get("seeds") or [],
        "figures": {},
        "warnings": [],
        "table": [],
        "config_sections": config_sections(cfg),
        "provenance": doc.get("provenance") or {},
        "config_hash": doc.get("config_hash", ""),
    }
    cols = ("S1", "S2", "E", "reg", "S1_over_S2", "G_residue_over_spike", "outliers")
    panels = {}
    for name in dict.fromkeys(r.get("regularizer", "") for r in rows):
        mine = [r for r in rows if r.get("regularizer") == name]
        xs = sorted({num(r.get("strength")) for r in mine} - {math.nan})
        at = {x: [r for r in mine if num(r.get("strength")) == x] for x in xs}
        lines = {}
        for key, label in (("S1_over_S2", "‖S1‖/‖S2‖"), ("G_residue_over_spike", "G along X_Bᵀr / along q")):
            v = [[num(r.get(key)) for r in at[x]] for x in xs]
            lines[label] = tuple(np.array([f(np.array(vals)) for vals in v]) for f in (np.nanmean, np.nanmin, np.nanmax))
        panels[name] = (xs, lines)
        for x in xs:
            ctx["table"].append(
                {
                    "regularizer": name,
                    "strength": g(x),
                    "runs": len(at[x]),
                    **{c: g(mean_sd([num(r.get(c)) for r in at[x]])[0]) for c in cols},
                    "regime": most_common([r.get("regime") for r in at[x]]) or "–",
                }
            )
    if panels:
        drawer(ctx)("path", "regularisation path", figures.regpath, panels, ctx["steps"])
    return ctx
