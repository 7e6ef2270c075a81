"""The advisor's report: per layer a heatmap of the captured share over (r, T) with the
recommendation marked, a table of layers and recommendations, drift and refresh cost, and the
validation's loss curves (full Adam beside GaLore at the recommendation and at its defaults)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradrank.report.common import PAPERS, get, templates_env, write_report
from gradrank.report.figures import figure_svg, grid_axes, mesh, new_figure, styled
from gradrank.results import advice
from gradrank.results.files import read_json

RUN_COLORS = {"adam": "#222222", "galore_recommended": "#1f5fa8", "galore_default": "#d0661c"}


@styled
def energy_map(layer, ranks: list[int], intervals: list[int], projector: str, key: str) -> str:
    """Captured share of `projector` over rank (rows) x interval (columns), numbers in the cells;
    the layer's recommendation framed, ranks at or above the smaller dimension marked '≥'."""
    R = np.full((len(ranks), len(intervals)), np.nan)
    full = np.zeros_like(R, dtype=bool)
    for e in layer.energy:
        if e.projector == projector and e.rank in ranks and e.interval in intervals:
            i, j = ranks.index(e.rank), intervals.index(e.interval)
            R[i, j], full[i, j] = e.captured, e.full
    fig, ax = new_figure(figsize=(min(6.6, 1.9 + 0.55 * len(intervals)), 0.9 + 0.28 * len(ranks)))
    im = mesh(ax, R, cmap="viridis", vmin=0.0, vmax=1.0)
    for (i, j), v in np.ndenumerate(R):
        if np.isfinite(v):
            r, g, b, _ = im.cmap(im.norm(v))
            ax.text(
                j,
                i,
                ("≥" if full[i, j] else "") + f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=6,
                color="#222" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white",
            )
    rec = layer.recommended if layer.recommended.projector == projector else None
    if projector == "svd" and layer.recommended_svd is not None:
        rec = layer.recommended_svd
    if rec is not None and rec.rank in ranks and rec.interval in intervals:
        i, j = ranks.index(rec.rank), intervals.index(rec.interval)
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="#e8412c", linewidth=2.0))
    grid_axes(ax, "refresh interval T (steps)", intervals, "rank r", ranks)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    ax.set_title(f"{layer.name}: {projector} projector, captured share")
    fig.tight_layout()
    return figure_svg(fig, key, f"captured share of the {projector} projector for layer {layer.name}")


@styled
def loss_curves(validation) -> str:
    fig, ax = new_figure(figsize=(6.6, 2.6))
    for run in validation.runs:
        y = np.asarray(run.loss, float)
        ax.plot(np.arange(len(y)), y, color=RUN_COLORS.get(run.name, "#4d9a6a"), label=f"{run.label}: {run.final:.3g}")
    if all(v > 0 for run in validation.runs for v in run.loss if np.isfinite(v)):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (full batch)")
    ax.legend()
    fig.tight_layout()
    return figure_svg(fig, "fig-validation", "loss curves of full Adam and GaLore")


def render_advice(run_dir: Path, paper: str) -> str:
    adv = advice.read(Path(run_dir))
    maps = []
    for li, lay in enumerate(adv.layers):
        grid_ranks = [r for r in adv.ranks]
        for p in adv.projectors:
            ranks = [1, 2] if p == "theory" else grid_ranks
            maps.append((lay.name, p, energy_map(lay, ranks, adv.intervals, p, f"fig-energy-{li}-{p}")))
    curves = loss_curves(adv.validation) if adv.validation is not None else None
    title = adv.config.output.name or f"advice for {adv.model}"
    return (
        templates_env().get_template("advice.html.j2").render(a=adv, maps=maps, curves=curves, title=title, paper=PAPERS[paper])
    )


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A projector advice directory (advice.json)."""
    paper = paper or get(read_json(run_dir / "advice.json", "advice directory").get("config") or {}, "output.paper", "a4")
    return write_report(render_advice(run_dir, paper), formats, Path(out_dir or run_dir), paper)
