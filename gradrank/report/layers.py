"""The report of a `gradrank layers` directory: one row per layer, figures across depth and the
spectrum of one chosen layer (templates/layers.html.j2)."""

from __future__ import annotations

from pathlib import Path

from gradrank.errors import InputError
from gradrank.report import figures
from gradrank.report.common import PAPERS, rounding_floor, templates_env, write_report
from gradrank.results import layers as layers_out
from gradrank.results.files import read_json
from gradrank.results.layers import csv_row


def chosen_layer(result, wanted: str = ""):
    """The layer whose spectrum is shown: layers.show, else the first with the most outliers."""
    if wanted:
        return result.layer(wanted)
    return max(result.layers, key=lambda r: r.outliers)


def render_layers(run_dir: Path, paper: str | None = None, show: str | None = None) -> tuple[str, str]:
    """(HTML, paper) for a layers directory."""
    result = layers_out.read(run_dir)
    if not result.layers:
        raise InputError(f"{run_dir}/layers.json: no layers")
    cfg = result.config
    paper = paper or cfg.output.paper
    pick = chosen_layer(result, cfg.layers.show if show is None else show)
    rows = [csv_row(r) for r in result.layers]
    prefix, _ = figures.layer_labels([r.name for r in result.layers], width=10**6)  # the table drops the shared prefix
    depth = figures.depth_profile(
        [r.name for r in result.layers],
        [r.outliers for r in result.layers],
        {k: [r.shares[k] for r in result.layers] for k in ("S1", "S12", "S2", "E")},
        {
            "residue": [r.alignment["residue"][0] if r.alignment["residue"] else None for r in result.layers],
            "spike": [r.alignment["spike"][0] if r.alignment["spike"] else None for r in result.layers],
            "propagated": [r.spike["propagated"] for r in result.layers],
        },
    )
    values = result.arrays.get(f"{pick.name}/G")
    spectrum = None
    if values is not None:
        spectrum = figures.spectrum(
            values,
            result.arrays.get(f"{pick.name}/E"),
            pick.norms,
            pick.bulk_edge,
            rounding_floor({"compute": {"dtype": result.dtype}}),
        )
    prov = read_json(Path(run_dir) / "layers.json", "layers directory").get("provenance", {})
    title = cfg.output.name or f"layers of {result.model}"
    forms = sorted({r.form for r in result.layers})
    html = (
        templates_env()
        .get_template("layers.html.j2")
        .render(
            title=title,
            r=result,
            rows=rows,
            pick=pick,
            depth=depth,
            spectrum=spectrum,
            forms=forms,
            low_rank=sum(1 for r in result.layers if r.outliers > 0),
            prov=prov,
            config_hash=cfg.hash(),
            prefix=prefix,
            floor=rounding_floor({"compute": {"dtype": result.dtype}}),
            paper=PAPERS[paper],
        )
    )
    return html, paper


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A per-layer analysis directory (layers.json)."""
    html, paper = render_layers(run_dir, paper)
    return write_report(html, formats, Path(out_dir or run_dir), paper)
