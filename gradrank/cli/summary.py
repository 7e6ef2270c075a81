"""The terminal summary of a run."""

from __future__ import annotations

from pathlib import Path

from gradrank.cli.common import console


def print_summary(result, target: Path | None = None, command: str = "analyze") -> None:
    """A compact rich summary: sizes, term norms, top singular values with alignments, regime."""
    from rich.markup import escape
    from rich.table import Table

    m = result.metrics
    con = console()
    sz, nr = m.sizes, m.norms
    cfg = result.config
    con.print(
        f"[bold]gradrank {command}[/]  n={sz.n} d={sz.d} m={sz.m}  "
        f"{cfg.model.activation}, {cfg.model.scaling}, {cfg.loss.kind}, zeta={m.data.zeta:.3g}  "
        f"[dim]config {m.config_hash}[/]"
    )
    norms = Table(title="term norms (operator)", title_justify="left", box=None)
    terms = ("G", "S1", "S12", "S2", "E", *(["reg"] if nr.reg is not None else []))
    for k in terms:
        norms.add_column(k, justify="right")
    norms.add_row(*(f"{getattr(nr, k):.4g}" for k in terms))
    con.print(norms)
    top = Table(title="top singular values of G", title_justify="left", box=None)
    for col in ("k", "s_k", "|cos u,X_B'r|", "|cos u,q|", "|cos v,a*mu|", ""):
        top.add_column(col, justify="right")
    al = m.alignment
    for i, s in enumerate(m.singular_values[:5]):
        mark = "outlier" if s > m.bulk_edge else ""
        top.add_row(str(i + 1), f"{s:.4g}", f"{al.residue[i]:.3f}", f"{al.spike[i]:.3f}", f"{al.right_mu[i]:.3f}", mark)
    con.print(top)
    rk = m.rank
    con.print(
        f"regime: [bold]{m.regime}[/]  outliers={rk.outliers}  stable rank={rk.stable:.3g}  "
        f"energy in span(X_B'r, q)={m.energy.predicted_subspace:.3f} (top-2: {m.energy.top2_subspace:.3f})  "
        f"identity error={m.identity_error:.1e}"
    )
    for w in [*m.trust.warnings, *m.trust.notes]:
        con.print("[bold red]warning:[/] " + escape(w))
    if target is not None:
        con.print("wrote [cyan]" + escape(str(target)) + "[/]")
    con.file.flush()
