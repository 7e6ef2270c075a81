"""theory, scaling, regpath: predictions, finite-size scaling and regularisation paths."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import List, Optional

import typer

from gradrank.cli.common import (
    ConfigArg,
    DeviceOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    app,
    console,
    example,
    load_config,
    output_dir,
    run_guarded,
)
from gradrank.cli.progress import SweepProgress
from gradrank.errors import InputError


@app.command(epilog=example("gradrank theory --set data.nu=0.3", "gradrank theory sample_configs/scaling.toml --json"))
def theory(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    as_json: bool = typer.Option(False, "--json", help="print the prediction as JSON"),
):
    """Predicted regime and growth exponents in n of ||S1||, ||S12||, ||S2||, ||E|| (docs/theory.md)."""

    def go():
        from gradrank.studies import theory as th

        cfg = load_config(config, set_, seed)
        if cfg.data.source != "spiked":
            raise InputError("config key 'data.source' must be spiked: the theory is for the spiked model")
        pred = th.predict(cfg)
        if as_json:
            typer.echo(json.dumps(pred.to_dict(), indent=2))
            return
        from rich.markup import escape
        from rich.table import Table

        con = console()
        i = pred.inputs
        con.print(
            f"[bold]gradrank theory[/]  nu={i['nu']:g} alpha={i['alpha']:g} {i['activation']}, {i['scaling']}, "
            f"{i['loss']}{', planted W' if i['planted'] else ''}  (n, d, m grow at fixed ratios; zeta = n^nu)"
        )
        table = Table(title="predicted growth exponents: ||term|| ~ n^e", title_justify="left", box=None)
        for col in ("term", "e", "from (max of the parts)"):
            table.add_column(col, justify="left" if col.startswith("from") else "right")
        for t in th.TERMS:
            e = pred.exponents[t]
            parts = "; ".join(f"{escape(k)}: {v:+.3g}" for k, v in pred.parts[t].items()) or "vanishes identically"
            table.add_row(t, "-" if e is None else f"{e:+.3g}", parts)
        con.print(table)
        con.print("ratio exponents: " + ", ".join(f"{k} ~ n^{'-' if v is None else f'{v:+.3g}'}" for k, v in pred.ratios.items()))
        con.print(
            f"predicted regime: [bold]{pred.regime}[/]"
            + ("" if pred.valid else "  [yellow](outside the heuristic's validity)[/]")
        )
        for note in pred.notes:
            con.print(f"note: {note}", markup=False)

    run_guarded(go)


@app.command(epilog=example("gradrank scaling sample_configs/scaling.toml --n 200,400,800 --seeds 5 -o runs/scaling --pdf"))
def scaling(
    config: Optional[Path] = ConfigArg,
    n: str = typer.Option("200,400,800", "--n", help="comma-separated sample sizes; d and m follow at the config's ratios"),
    seeds: int = typer.Option(5, "--seeds", help="seeds per size (seed .. seed+N-1)"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """Scaling study: analyses over n at fixed d/n, m/n; log-log slopes with CIs beside the predictions."""

    def go():
        try:
            ns = sorted({int(v) for v in n.split(",") if v.strip()})
        except ValueError:
            raise InputError(f"option --n: expected comma-separated integers, got {n!r}") from None
        if not ns or min(ns) < 2:
            raise InputError("option --n: sizes must be integers >= 2")
        cfg = load_config(config, set_, seed, device)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import api
        from gradrank.config.resources import check_memory
        from gradrank.studies import scaling as scaling_mod
        from gradrank.sweeps.spec import Progress

        check_memory(scaling_mod.sized(cfg, ns[-1]))
        target = output_dir(out, cfg, "scaling")
        t0 = time.perf_counter()
        with SweepProgress("scaling") as bar:
            result = scaling_mod.study(
                cfg, ns, seeds, lambda i, total, label: bar(Progress(total, i, 0, 0, None, time.perf_counter() - t0, total))
            )
        api.save(result, target)
        if quiet:
            typer.echo(str(target))
            return
        for c in result.comparison:
            pred = "-" if c["predicted"] is None else f"{c['predicted']:+.3f}"
            fit = "no fit" if c["slope"] is None else f"{c['slope']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            verdict = {None: "", True: "agrees", False: "DISAGREES"}[c["agree"]]
            typer.echo(f"{c['quantity']:>5}  predicted {pred:>7}  fitted {fit:<28} {verdict}")
        typer.echo(f"wrote {target}")

    run_guarded(go)


@app.command(
    epilog=example(
        "gradrank regpath --grid weight_decay=0,0.01,0.1 --seeds 0,1,2 -o runs/regpath",
        "gradrank report runs/regpath --format pdf",
    )
)
def regpath(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    grid: Optional[List[str]] = typer.Option(
        None, "--grid", help="NAME=S1,S2,... strengths for weight_decay, jacobian or input_noise (repeatable)"
    ),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds"),
    steps: int = typer.Option(0, "--steps", min=0, help="training steps before decomposing (0: at initialisation)"),
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """Regularisation path: which component (S1 or S2) each regulariser suppresses or boosts."""

    def go():
        cfg = load_config(config, set_, None, device)
        try:
            seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            raise InputError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        if not seed_list or min(seed_list) < 0:
            raise InputError(f"--seeds must list non-negative integers, got {seeds!r}")
        from gradrank.config.resources import check_memory
        from gradrank.results import regpath as regpath_out
        from gradrank.studies import regpath as rp

        grids = rp.parse_grid(list(grid or []))
        check_memory(cfg)
        target = output_dir(out, cfg, "regpath")

        def progress(row):
            if not quiet:
                typer.echo(
                    f"{row['regularizer']}={row['strength']:g} seed {row['seed']}: S1={row['S1']:.4g} S2={row['S2']:.4g} "
                    f"S1/S2={row['S1_over_S2']:.4g} reg={row['reg']:.3g}",
                    err=True,
                )

        res = rp.run(cfg, grids, seed_list, steps, progress)
        regpath_out.write(target, res)
        formats = (["html"] if not no_report and cfg.output.report else []) + (["pdf"] if pdf or cfg.output.pdf else [])
        if formats:
            from gradrank.report import render

            render.render_dir(target, formats)
        if not quiet:
            for name, summ in res.summary.items():
                lc = summ["log_change"]
                typer.echo(
                    f"{name} (up to {summ['strength']:g}): ||S1|| x{math.exp(lc['S1']['mean']):.3g}, "
                    f"||S2|| x{math.exp(lc['S2']['mean']):.3g}, ||S1||/||S2|| x{math.exp(lc['S1_over_S2']['mean']):.3g}: {summ['verdict']}"
                )
        typer.echo(str(target))

    run_guarded(go)
