"""analyze, generate, decompose: one gradient and its decomposition."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
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
from gradrank.errors import InputError
from gradrank.io import check_new_file


@app.command(
    epilog=example("gradrank analyze", "gradrank analyze sample_configs/fig1_isotropic.toml --set data.nu=0.3 --pdf -o runs/nu03")
)
def analyze(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
    force: bool = ForceOpt,
):
    """Data -> network -> gradient -> decomposition: summary, run directory and report."""

    def go():
        cfg = load_config(config, set_, seed, device)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import api
        from gradrank.cli.summary import print_summary
        from gradrank.config.resources import check_memory

        if not force:
            check_memory(cfg)
        target = output_dir(out, cfg, "analyze")
        result = api.analyze(cfg)
        api.save(result, target)
        if not quiet:
            print_summary(result, target)
        else:
            typer.echo(str(target))

    run_guarded(go)


@app.command(epilog=example("gradrank generate -o data.npz --set data.n=500", "gradrank decompose --data data.npz"))
def generate(
    config: Optional[Path] = ConfigArg,
    out: Path = typer.Option(..., "-o", "--out", help="output .npz file"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    force: bool = ForceOpt,
):
    """Write a data set: X, y, and for spiked data q, z, zeta, X_B's spectrum."""

    def go():
        if out.suffix != ".npz":
            raise InputError(f"output file {out} must end in .npz")

        check_new_file(out)
        cfg = load_config(config, set_, seed)

        from gradrank import config as config_mod
        from gradrank import io
        from gradrank.config.resources import check_memory
        from gradrank.data import spiked as data

        if not force:
            check_memory(cfg, m=1)  # data only: no network
        ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
        arrays = {"X": ds.X, "y": ds.y, "q": ds.q, "z": ds.z, "zeta": ds.zeta, "X_B": ds.X_B, "bulk_eigenvalues": ds.eigenvalues}
        if ds.X_test is not None:
            arrays |= {"X_test": ds.X_test, "y_test": ds.y_test}
        arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in arrays.items()}
        arrays["config_toml"] = np.array(config_mod.to_toml(cfg))
        io.write_new(out, io.npz_bytes(arrays))
        typer.echo(f"wrote {out}: n={ds.n}, d={ds.d}, zeta={ds.zeta:.4g}")

    run_guarded(go)


@app.command(
    epilog=example(
        "gradrank decompose --data mydata.npz", "gradrank decompose --data X.npy --weights runs/train1/weights.npz -o runs/mine"
    )
)
def decompose(
    data: Path = typer.Option(..., "--data", help="data file (.npz/.npy/.csv)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help=".npz with W (m x d) and a (m)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config for everything else"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    quiet: bool = QuietOpt,
    force: bool = ForceOpt,
):
    """Decompose the gradient for given data (and weights, else initialised from the config)."""

    def go():
        files = {
            "data.source": "file",
            "data.path": str(data),
            "data.sha256": "",
            **({"model.weights": str(weights), "model.weights_sha256": ""} if weights else {}),
        }
        cfg = load_config(config, set_, seed, device, files)
        from gradrank import api
        from gradrank.cli.summary import print_summary
        from gradrank.config.resources import check_files

        if not force:
            check_files(cfg, data, weights)

        target = output_dir(out, cfg, "decompose")
        result = api.analyze(cfg)
        api.save(result, target)
        print_summary(result, target, "decompose") if not quiet else typer.echo(str(target))

    run_guarded(go)
