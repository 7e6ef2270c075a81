"""Command line: parse, call the backend, print, write. Heavy imports happen inside commands,
so `gradrank --help` never imports torch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from gradrank.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Low-rank structure of first-layer gradients in two-layer networks.")
_state = {"debug": False}

ConfigArg = typer.Argument(None, help="TOML config (default: the paper's Figure 1 setting)", show_default=False)
SetOpt = typer.Option(None, "--set", help="override a config key: KEY=VALUE (repeatable, dotted keys)")
SeedOpt = typer.Option(None, "--seed", help="seed for everything (overrides the config)")
OutOpt = typer.Option(None, "-o", "--out", help="output directory")
DeviceOpt = typer.Option(None, "--device", help="cpu or cuda")


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show tracebacks of internal errors")):
    _state["debug"] = debug


def run_guarded(fn: Callable[[], int | None]) -> None:
    """Exit 2 with one line for bad input, 1 for internal errors (traceback only with --debug)."""
    try:
        code = fn()
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
        if _state["debug"]:
            raise
        typer.echo(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for a traceback)", err=True)
        raise typer.Exit(1)
    raise typer.Exit(code or 0)


def load_config(path: Optional[Path], sets: Optional[List[str]], seed: Optional[int], device: Optional[str] = None):
    from gradrank import config

    extra = list(sets or [])
    if device:
        extra.append(f"compute.device={device}")
    return config.load(path, extra, seed)


def default_out(cfg, kind: str) -> Path:
    from gradrank.io import safe_name

    return Path("runs") / f"{safe_name(cfg.output.name, kind)}-{cfg.hash()[:8]}"


@app.command()
def analyze(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="print only the run directory"),
):
    """Data -> network -> gradient -> decomposition: summary, run directory and report."""

    def go():
        cfg = load_config(config, set_, seed, device)
        if pdf or no_report:
            cfg = cfg.replace(**{"output.pdf": pdf or cfg.output.pdf, "output.report": not no_report})
        from gradrank import analysis, outputs
        from gradrank.resources import check_memory

        check_memory(cfg)
        result = analysis.analyze(cfg)
        target = out or default_out(cfg, "analyze")
        outputs.write_run(target, result)
        if not quiet:
            outputs.print_summary(result, target)
        else:
            typer.echo(str(target))

    run_guarded(go)


@app.command()
def generate(
    config: Optional[Path] = ConfigArg,
    out: Path = typer.Option(..., "-o", "--out", help="output .npz file"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
):
    """Write a data set: X, y, and for spiked data q, z, zeta, X_B's spectrum."""

    def go():
        if out.suffix != ".npz":
            raise InputError(f"output file {out} must end in .npz")
        cfg = load_config(config, set_, seed)
        import numpy as np

        from gradrank import config as config_mod
        from gradrank import data, io

        ds = data.load(cfg)
        arrays = {"X": ds.X, "y": ds.y, "q": ds.q, "z": ds.z, "zeta": ds.zeta, "X_B": ds.X_B,
                  "bulk_eigenvalues": ds.eigenvalues}
        if ds.X_test is not None:
            arrays |= {"X_test": ds.X_test, "y_test": ds.y_test}
        arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in arrays.items()}
        arrays["config_toml"] = np.array(config_mod.to_toml(cfg))
        out.parent.mkdir(parents=True, exist_ok=True)
        io.write_npz(out, arrays)
        typer.echo(f"wrote {out}: n={ds.n}, d={ds.d}, zeta={ds.zeta:.4g}")

    run_guarded(go)


@app.command()
def decompose(
    data: Path = typer.Option(..., "--data", help="data file (.npz/.npy/.csv)"),
    weights: Optional[Path] = typer.Option(None, "--weights", help=".npz with W (m x d) and a (m)"),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config for everything else"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    quiet: bool = typer.Option(False, "-q", "--quiet"),
):
    """Decompose the gradient for given data (and weights, else initialised from the config)."""

    def go():
        cfg = load_config(config, [*(set_ or []), "data.source=file", f"data.path={_toml_str(data)}"], seed, device)
        from gradrank import analysis, outputs

        result = analysis.analyze(cfg, weights_path=weights)
        target = out or default_out(cfg, "decompose")
        outputs.write_run(target, result)
        outputs.print_summary(result, target) if not quiet else typer.echo(str(target))

    run_guarded(go)


def _toml_str(p: Path) -> str:
    import json

    return json.dumps(str(p))


def main() -> None:
    app(prog_name="gradrank")


if __name__ == "__main__":
    main()
    sys.exit(0)
