"""The one-step report: test error and alignments against eta with seed bands, and test error
against each alignment over every point, with the correlation and its bootstrap CI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradrank.core.onestep_records import OnestepResult
from gradrank.report import figures
from gradrank.report.common import PAPERS, config_sections, g, templates_env, write_report
from gradrank.results import onestep as onestep_out
from gradrank.studies.onestep import ALIGNMENTS

LABELS = {"align_target": "target span{β}", "align_spike": "spike q", "align_residue": "residue X_Bᵀr"}


def context(result: OnestepResult) -> dict:
    cfg = result.config
    etas = result.etas
    by = {s.eta: s for s in result.by_eta}
    band = lambda key: (np.array([getattr(by[e], key) for e in etas]), np.array([getattr(by[e], f"{key}_sd") for e in etas]))  # noqa: E731
    series = {
        "test error (ridge readout)": [("test error", *band("test_error"))],
        "|cos| of the update's top singular vector": [(LABELS[a], *band(a)) for a in ALIGNMENTS if np.isfinite(band(a)[0]).any()],
    }
    series = {t: lines for t, lines in series.items() if lines}
    moved = [p for p in result.points if p.eta > 0]
    panels = []
    for a in ALIGNMENTS:
        c = result.correlations[a]
        x = np.array([getattr(p, a) for p in moved], float)
        if not np.isfinite(x).any():
            continue
        title = f"r = {g(c.pearson, 2)} [{g(c.ci_low, 2)}, {g(c.ci_high, 2)}]"
        panels.append(
            (
                title,
                f"|cos| with {LABELS[a]}",
                x,
                np.array([p.test_error for p in moved], float),
                np.log2(1 + np.array([p.eta for p in moved])),
            )
        )
    rf = by.get(0.0)
    best = min(result.by_eta, key=lambda s: s.test_error if math.isfinite(s.test_error) else math.inf)
    if rf is not None and best.eta != 0.0:
        headline = (
            f"Best step size η = {g(best.eta)}: test error {g(best.test_error)} against {g(rf.test_error)} for random features "
            f"(η = 0), {best.improvement:+.1%}; over {len(result.seeds)} seed{'s' if len(result.seeds) > 1 else ''}."
        )
    elif rf is not None:
        headline = (
            f"No step size beats random features (test error {g(rf.test_error)} at η = 0) over {len(result.seeds)} seed(s)."
        )
    else:
        headline = f"Best step size η = {g(best.eta)}: test error {g(best.test_error)} (no η = 0 reference in this run)."
    return {
        "title": cfg.output.name or f"one-step {cfg.hash()}",
        "r": result,
        "headline": headline,
        "labels": LABELS,
        "alignments": ALIGNMENTS,
        "figures": {
            "eta": figures.seed_bands("η", [f"{e:g}" for e in etas], series) if series else None,  # evenly spaced
            "scatter": figures.scatter(panels, "test error", "log₂(1 + η)") if panels else None,
        },
        "diverged": sum(p.diverged for p in result.points),
        "config_sections": config_sections(cfg.to_dict()),
        "provenance": result.provenance,
        "config_hash": cfg.hash(),
    }


def render(result: OnestepResult, paper: str = "A4") -> str:
    return templates_env().get_template("onestep.html.j2").render(**context(result), paper=paper)


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A one-step study directory (onestep.json + onestep.csv)."""
    result = onestep_out.read(run_dir)
    paper = paper or result.config.output.paper
    return write_report(render(result, PAPERS[paper]), formats, Path(out_dir or run_dir), paper)
