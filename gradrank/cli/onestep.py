"""onestep: large first-layer gradient step(s), a ridge readout, test error against random features."""

from __future__ import annotations

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
    example,
    load_config,
    output_dir,
    run_guarded,
)
from gradrank.cli.progress import SweepProgress
from gradrank.errors import InputError


@app.command(
    "onestep",
    epilog=example(
        "gradrank onestep --eta 0,1,4,16 --seeds 5 -o runs/onestep",
        "gradrank onestep sample_configs/onestep_single_index.toml --steps 2",
    ),
)
def onestep_cmd(
    config: Optional[Path] = ConfigArg,
    eta: Optional[str] = typer.Option(None, "--eta", help="step sizes, e.g. 0,1,4,16 (0 = random features; default onestep.eta)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="gradient steps before the readout (default onestep.steps = 1)"),
    seeds: int = typer.Option(1, "--seeds", help="N seeds (seed .. seed+N-1)"),
    ridge: Optional[float] = typer.Option(None, "--ridge", help="fixed ridge strength (default: chosen on a held-out split)"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """One-step protocol (Ba et al. 2022): W1 = W0 - eta * scale * G, ridge readout, test error and alignments."""

    def go():
        from gradrank.studies import onestep as onestep_mod

        etas = onestep_mod.parse_etas(eta) if eta is not None else None
        from gradrank.sweeps.spec import MAX_POINTS

        if not 1 <= seeds <= MAX_POINTS:
            raise InputError(f"option --seeds: must be from 1 to {MAX_POINTS}, got {seeds}")
        cfg = load_config(config, set_, seed, device)
        cfg = onestep_mod.configure(cfg, etas, steps, ridge)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import api
        from gradrank.config.resources import check_memory
        from gradrank.sweeps.spec import Progress

        check_memory(cfg)
        target = output_dir(out, cfg, "onestep")
        total, t0, done = seeds * len(cfg.onestep.eta), time.perf_counter(), []
        with SweepProgress("onestep") as bar:

            def on_point(p):
                done.append(p)
                bar(Progress(total, len(done), 0, 0, None, time.perf_counter() - t0, total))

            result = onestep_mod.study(cfg, [cfg.seed + i for i in range(seeds)], on_point)
        api.save(result, target)
        if quiet:
            typer.echo(str(target))
            return
        for s in result.by_eta:
            typer.echo(
                f"eta={s.eta:g}: test error {s.test_error:.4g} ± {s.test_error_sd:.2g} "
                f"(improvement over random features {s.improvement:+.1%}); |cos| target {s.align_target:.3f}, "
                f"spike q {s.align_spike:.3f}, residue {s.align_residue:.3f}"
            )
        diverged = sum(p.diverged for p in result.points)
        if diverged:
            typer.echo(f"warning: {diverged} point(s) diverged (test error NaN); lower --eta", err=True)
        typer.echo(f"wrote {target}")

    run_guarded(go)
