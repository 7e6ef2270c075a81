"""Command line: parse, call the backend, print, write. Heavy imports happen inside commands,
so `gradrank --help` never imports torch. One module per command group registers its commands
on the shared app."""

from __future__ import annotations

import sys

import typer

from gradrank.cli import advise, layers, onestep, run, sweep, theory, train  # noqa: F401  (registers the commands)
from gradrank.cli.common import app, take_debug

__all__ = ["app", "main"]


def main() -> None:
    """The entry point. Usage errors (unknown option, bad option value) become one line and exit 2,
    like every other bad input, instead of click's three-line usage block."""
    try:
        code = app(args=take_debug(sys.argv[1:]), prog_name="gradrank", standalone_mode=False)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        code = 130
    except typer.TyperException as exc:  # click's UsageError and relatives (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help())
        else:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
    sys.exit(0)
