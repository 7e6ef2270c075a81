"""layers: the four-term decomposition of every linear layer's gradient, for a built-in or the user's model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gradrank.cli.common import (
    ConfigArg,
    DeviceOpt,
    ForceOpt,
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
from gradrank.cli.progress import LayerProgress


@app.command(
    "layers",
    epilog=example(
        "gradrank layers sample_configs/deep_mlp.toml --model mlp -o runs/deep",
        "gradrank layers --model minilm -o runs/minilm",
        "gradrank layers --model my_model.py:build --set layers.patterns='[\"encoder.*\"]'",
    ),
)
def layers_cmd(
    config: Optional[Path] = ConfigArg,
    model: Optional[str] = typer.Option(
        None, "--model", help="twolayer, mlp, minilm or path/to/file.py:function (runs that file's code: only your own)"
    ),
    layer: Optional[List[str]] = typer.Option(None, "--layers", help="fnmatch pattern over module names (repeatable)"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
    force: bool = ForceOpt,
):
    """Decompose every linear layer's gradient G = H^T D / n: one row per layer, a report across depth."""

    def go():
        overrides = {}
        if model is not None:
            overrides |= {"layers.model": model, "layers.model_sha256": ""}
        if layer:
            overrides["layers.patterns"] = list(layer)
        cfg = load_config(config, set_, seed, device, overrides)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import api

        target = output_dir(out, cfg, "layers")
        with LayerProgress(quiet) as progress:
            result = api.layers_from_config(cfg, force=force, on_layer=progress)
        api.save(result, target)
        if quiet:
            typer.echo(str(target))
            return
        for r in result.layers:
            typer.echo(
                f"{r.name:48s} {r.shape[0]:>5d}x{r.shape[1]:<5d} {r.form:8s} ‖G‖={r.norms['G']:.4g} "
                f"outliers={r.outliers} stable_rank={r.rank['stable']:.3g} identity={r.identity_error:.1e} autograd={r.autograd_error:.1e}"
            )
        for name, why in result.skipped.items():
            typer.echo(f"skipped {name}: {why}")
        typer.echo(f"wrote {target}")

    run_guarded(go)
