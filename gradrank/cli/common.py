"""What every command shares: the Typer app, the common options, config loading, the output
directory check and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import errno
import io
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional

import typer

from gradrank._version import __version__
from gradrank.errors import InputError
from gradrank.io import check_output_dir, safe_name
from gradrank.io import printable as one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Low-rank structure of first-layer gradients in two-layer networks.",
)
_state = {"debug": False}

ConfigArg = typer.Argument(None, help="TOML config (default: the paper's Figure 1 setting)", show_default=False)
SetOpt = typer.Option(None, "--set", help="override a config key: KEY=VALUE (repeatable, dotted keys)")
SeedOpt = typer.Option(None, "--seed", help="seed for everything (overrides the config)")
OutOpt = typer.Option(None, "-o", "--out", help="output directory")
DeviceOpt = typer.Option(None, "--device", help="cpu or cuda")
QuietOpt = typer.Option(False, "-q", "--quiet", help="print only the output directory")
ForceOpt = typer.Option(False, "--force", help="run even when the memory estimate exceeds the limit")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradrank {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks of internal errors (accepted anywhere on the line)"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
):
    _state["debug"] = debug or _state.pop("pending_debug", False)  # per invocation, never left over


def take_debug(argv: list[str]) -> list[str]:
    """--debug anywhere on the command line (before `--`): noted, and removed so every command accepts it."""
    cut = argv.index("--") if "--" in argv else len(argv)
    _state["pending_debug"] = "--debug" in argv[:cut]
    if _state["pending_debug"]:
        argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    return argv


def example(*lines: str) -> str:
    """A command's --help epilog: examples to copy."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def console():
    """The rich console for summaries: a terminal's width on a terminal; in batch jobs (no
    terminal) lines are never wrapped and carry no trailing padding."""

    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(file=_Stripped(sys.stdout), width=100_000, soft_wrap=True, no_color=True, highlight=False)


class _Stripped:
    """A text stream that drops the trailing spaces of every line written through it."""

    def __init__(self, stream):
        self.stream, self.buf = stream, ""

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        if self.buf:
            self.stream.write(self.buf.rstrip())
            self.buf = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def run_guarded(fn: Callable[[], int | None]) -> None:
    """Exit 2 with one line for bad input, 1 for internal errors (traceback only with --debug)."""
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name prints as its own bytes
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
            stream.reconfigure(errors="surrogateescape")
    try:
        code = fn()
    except InputError as exc:
        if _state["debug"] and exc.__cause__ is not None:  # the user's own code raised: its traceback
            traceback.print_exception(exc.__cause__)
        typer.echo(f"error: {one_line(str(exc))}", err=True)
        raise typer.Exit(2)
    except OSError as exc:
        if exc.errno not in _USER_ERRNOS:
            return _internal(exc)
        where = exc.filename if exc.filename is not None else "output"
        typer.echo(f"error: {one_line(str(where))}: {exc.strerror or exc.__class__.__name__}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
        _internal(exc)
    raise typer.Exit(code or 0)


# The file system's answers to a path the user chose (full disk, quota, read-only, too long, not a
# directory, no permission): bad input, exit 2 naming the path, wherever in a command they arise.
_USER_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EACCES,
    errno.EPERM,
    errno.ELOOP,
    errno.EXDEV,
    errno.EFBIG,
}


def _internal(exc: Exception):
    if _state["debug"]:
        raise exc
    typer.echo(f"internal error: {exc.__class__.__name__}: {one_line(str(exc))} (rerun with --debug for a traceback)", err=True)
    raise typer.Exit(1)


def load_config(
    path: Optional[Path],
    sets: Optional[List[str]],
    seed: Optional[int],
    device: Optional[str] = None,
    overrides: Optional[dict] = None,
):
    from gradrank import config

    extra = list(sets or [])
    if device:
        extra.append(f"compute.device={device}")
    return config.load(path, extra, seed, overrides)


def output_dir(out: Optional[Path], cfg, kind: str) -> Path:
    """-o DIR, or runs/<name>-<config hash>; checked before any work: new, empty or gradrank's own."""

    target = out if out is not None else Path("runs") / f"{safe_name(cfg.output.name, kind)}-{cfg.hash()[:8]}"
    check_output_dir(target)
    return target
