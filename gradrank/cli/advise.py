"""advise: which projector rank r and refresh interval T, per layer, for GaLore-style training."""

from __future__ import annotations

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


@app.command(
    "advise",
    epilog=example(
        "gradrank advise sample_configs/advise.toml -o runs/advise",
        "gradrank advise --model mlp --ranks 1,2,4,8 --intervals 1,10,50 --target 0.9",
    ),
)
def advise_cmd(
    config: Optional[Path] = ConfigArg,
    model: Optional[str] = typer.Option(None, "--model", help="twolayer (default), mlp, minilm or path/file.py:function"),
    ranks: Optional[str] = typer.Option(None, "--ranks", help="projector ranks, e.g. 1,2,4,8"),
    intervals: Optional[str] = typer.Option(None, "--intervals", help="refresh intervals in steps, e.g. 1,10,50"),
    target: Optional[float] = typer.Option(None, "--target", help="captured share to reach, in (0, 1]"),
    projector: Optional[str] = typer.Option(None, "--projector", help="svd,random,rows,theory (default: all that apply)"),
    no_validate: bool = typer.Option(False, "--no-validate", help="skip the GaLore / full-Adam validation runs"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """Captured gradient energy of rank-r projectors refreshed every T steps, per layer; a recommended
    (r, T); validated against GaLore (galore-torch) and full-rank Adam (advice.json, report)."""

    def go():
        from gradrank import api
        from gradrank.studies import advise as advisor

        opts = api.advise_overrides(model, ranks, intervals, target, projector, False if no_validate else None)
        cfg = load_config(config, set_, seed, device, opts)
        if no_report:
            cfg = cfg.replace(**{"output.report": False})
        cfg, problem = advisor.prepare(cfg)  # every option checked before the output directory is touched
        target_dir = output_dir(out, cfg, "advise")
        say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
        from gradrank.results.advice import Advice

        advice = Advice.from_payload(advisor.advise(cfg, say, problem), cfg)
        api.save(advice, target_dir)
        if quiet:
            typer.echo(str(target_dir))
            return
        for lay in advice.layers:
            r = lay.recommended
            flag = "" if r.meets_target else f"  (below target {advice.target})"
            full = "  (full rank)" if r.full else ""
            typer.echo(
                f"{lay.name} {lay.shape[0]}x{lay.shape[1]}: {r.projector} r={r.rank} T={r.interval} captures {r.captured:.3f}{flag}{full}"
            )
        if advice.validation is not None:
            v = advice.validation.verdict
            typer.echo(
                f"validation ({advice.validation.steps} steps): Adam {v['adam_final']:.4g}, GaLore recommended "
                f"{v['recommended_final']:.4g} ({100 * v['relative_gap']:+.1f} %), defaults {v['default_final']:.4g} "
                f"({100 * v['default_relative_gap']:+.1f} %)"
            )
        typer.echo(f"wrote {target_dir}")

    run_guarded(go)
