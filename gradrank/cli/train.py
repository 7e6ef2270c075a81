"""train: the decomposition tracked over training steps."""

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
from gradrank.cli.progress import TrainProgress


@app.command(
    "train",
    epilog=example(
        "gradrank train --set train.steps=200 --set train.lr=0.03 -o runs/train1 --pdf",
        "gradrank train sample_configs/training.toml",
    ),
)
def train_cmd(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    weights: Optional[Path] = typer.Option(None, "--weights", help="start from W, a in an .npz file"),
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """Train W (gd by default; sgd, adam) with the gradient's decomposition tracked over steps."""

    def go():
        files = {"model.weights": str(weights), "model.weights_sha256": ""} if weights else None
        cfg = load_config(config, set_, seed, device, files)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import api
        from gradrank.cli.summary import print_summary
        from gradrank.config.resources import check_memory
        from gradrank.studies import train as train_mod

        cfg = train_mod.resolve(cfg)
        check_memory(cfg)
        target = output_dir(out, cfg, "train")
        with TrainProgress(cfg.train.steps, quiet) as progress:
            tr = train_mod.train(cfg, progress)
        api.save(tr, target)
        if tr.diverged:
            typer.echo(f"warning: {tr.message}; the trajectory up to step {tr.info['steps_done']} is saved", err=True)
        if quiet:
            typer.echo(str(target))
        else:
            print_summary(tr.result, target, "train")

    run_guarded(go)
