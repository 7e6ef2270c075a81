"""Run directories (written atomically) and the terminal summary."""

from __future__ import annotations

from pathlib import Path

from gradrank import io
from gradrank.config import to_toml


def write_run(target: Path, result, extra_files=None) -> Path:
    """config.toml, metrics.json, arrays.npz, provenance.json and the report, all or nothing.

    `extra_files(tmp_dir)` writes a command's own files (e.g. train's trajectory.csv) into the
    staged directory before the report is rendered."""
    cfg = result.config
    prov = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, result.timings)
    metrics = {**result.metrics, "config": cfg.to_dict(), "provenance": prov}
    with io.staged_dir(Path(target), metrics.get("kind", "analyze")) as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        io.write_json(tmp / "metrics.json", metrics)
        io.write_json(tmp / "provenance.json", {"config_hash": cfg.hash(), **prov})
        io.write_npz(tmp / "arrays.npz", result.arrays)
        if extra_files is not None:
            extra_files(tmp)
        if cfg.output.report or cfg.output.pdf:
            from gradrank import report

            formats = (["html"] if cfg.output.report else []) + (["pdf"] if cfg.output.pdf else [])
            report.render_dir(tmp, formats)
    return Path(target)


def print_summary(result, target: Path | None = None, command: str = "analyze") -> None:
    """A compact rich summary: sizes, term norms, top singular values with alignments, regime."""
    from rich.console import Console
    from rich.table import Table

    m = result.metrics
    con = Console()
    sz, nr = m["sizes"], m["norms"]
    cfg = result.config
    con.print(f"[bold]gradrank {command}[/]  n={sz['n']} d={sz['d']} m={sz['m']}  "
              f"{cfg.model.activation}, {cfg.model.scaling}, {cfg.loss.kind}, zeta={m['data']['zeta']:.3g}  "
              f"[dim]config {m['config_hash']}[/]")
    norms = Table(title="term norms (operator)", title_justify="left", box=None)
    for k in ("G", "S1", "S12", "S2", "E", *(["reg"] if "reg" in nr else [])):
        norms.add_column(k, justify="right")
    norms.add_row(*(f"{nr[k]:.4g}" for k in ("G", "S1", "S12", "S2", "E", *(["reg"] if "reg" in nr else []))))
    con.print(norms)
    top = Table(title="top singular values of G", title_justify="left", box=None)
    for col in ("k", "s_k", "|cos u,X_B'r|", "|cos u,q|", "|cos v,a*mu|", ""):
        top.add_column(col, justify="right")
    al = m["alignment"]
    for i, s in enumerate(m["singular_values"][: min(5, len(m["singular_values"]))]):
        mark = "outlier" if s > m["bulk_edge"] else ""
        top.add_row(str(i + 1), f"{s:.4g}", f"{al['residue'][i]:.3f}", f"{al['spike'][i]:.3f}", f"{al['right_mu'][i]:.3f}", mark)
    con.print(top)
    rk = m["rank"]
    con.print(f"regime: [bold]{m['regime']}[/]  outliers={rk['outliers']}  stable rank={rk['stable']:.3g}  "
              f"energy in span(X_B'r, q)={m['energy']['predicted_subspace']:.3f} (top-2: {m['energy']['top2_subspace']:.3f})  "
              f"identity error={m['identity_error']:.1e}")
    for w in m["trust"]["warnings"]:
        con.print(f"[bold red]warning:[/] {w}")
    if target is not None:
        con.print(f"wrote [cyan]{target}[/]")
