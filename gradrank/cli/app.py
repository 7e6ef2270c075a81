"""Command line: parse, call the backend, print, write. Heavy imports happen inside commands,
so `gradrank --help` never imports torch."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import typer

from gradrank.errors import InputError

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
    from gradrank.io import check_output_dir, safe_name

    target = out if out is not None else Path("runs") / f"{safe_name(cfg.output.name, kind)}-{cfg.hash()[:8]}"
    check_output_dir(target)
    return target


@app.command()
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


@app.command()
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
        from gradrank.io import check_new_file

        check_new_file(out)
        cfg = load_config(config, set_, seed)
        import numpy as np

        from gradrank import config as config_mod
        from gradrank import io
        from gradrank.config.resources import check_memory
        from gradrank.twolayer import data

        if not force:
            check_memory(cfg, m=1)  # data only: no network
        ds = data.load(cfg)
        arrays = {"X": ds.X, "y": ds.y, "q": ds.q, "z": ds.z, "zeta": ds.zeta, "X_B": ds.X_B, "bulk_eigenvalues": ds.eigenvalues}
        if ds.X_test is not None:
            arrays |= {"X_test": ds.X_test, "y_test": ds.y_test}
        arrays = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in arrays.items()}
        arrays["config_toml"] = np.array(config_mod.to_toml(cfg))
        io.write_new(out, io.npz_bytes(arrays))
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


class _SweepProgress:
    """A rich progress bar on a terminal; plain log lines every `every` seconds otherwise."""

    def __init__(self, label: str, every: float = 10.0):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.label, self.every, self.last = label, every, 0.0
        self.bar = None

    def __enter__(self):
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed, {task.fields[running]} running, ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, p) -> None:
        if self.bar is not None:
            if not self.bar.tasks:
                from rich.markup import escape

                self.task = self.bar.add_task(escape(self.label), total=p.total, completed=p.done, failed=0, running=0)
            self.bar.update(self.task, completed=p.done + p.failed, failed=p.failed, running=p.running)
            return
        if p.done + p.failed < p.total and p.elapsed > 0 and p.elapsed - self.last < self.every:
            return
        self.last = p.elapsed
        ran = p.done + p.failed - (p.total - p.to_run)
        eta = f"{p.elapsed / ran * (p.total - p.done - p.failed):.0f} s" if ran else "?"
        typer.echo(
            f"{self.label}: {p.done}/{p.total} done, {p.failed} failed, {p.running} running, "
            f"{p.elapsed:.0f} s elapsed, ETA {eta}",
            err=True,
        )


def _sweep_status(root: Path) -> int:
    from gradrank.experiments import executors
    from gradrank.results import sweeps as sws

    store = sws.Store(root)
    s = sws.summary(store)
    m = s["manifest"]
    typer.echo(
        f"sweep {root}: {s['total']} points, {s['done']} done, {s['failed']} failed, {s['pending']} pending "
        f"(command {m['command']}, executor {m['executor'].get('name')})"
    )
    latest = executors.latest_slurm_tasks(m)
    if latest:
        states = executors.slurm_states(list(latest.values()))
        pending = [h for h in latest if store.state(h) == "pending"]
        counts: dict[str, int] = {}
        for h in pending:
            state = states.get(latest[h], "UNKNOWN")
            counts[state] = counts.get(state, 0) + 1
        jobs = ", ".join(j["job_id"] for j in m["slurm_jobs"])
        typer.echo(
            f"slurm jobs {jobs}: " + (", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items())) or "nothing queued")
        )
    for f in s["failed_points"]:
        typer.echo(f"  failed {f['hash']}  {sws.describe(f['values'])}: {f['error'].splitlines()[0] if f['error'] else ''}")
    return 0


@app.command()
def sweep(
    config: Optional[Path] = typer.Argument(None, help="TOML config, optionally with a [sweep] grid", show_default=False),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="an axis KEY=a,b,c or KEY=start:stop:num (repeatable)"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="N seeds (seed .. seed+N-1) as an axis"),
    zip_: bool = typer.Option(False, "--zip", help="zip the axes instead of their cartesian product"),
    executor: str = typer.Option("local", "--executor", help="local, dask or slurm"),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", help="parallel workers (default: number of cores)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="dask: existing scheduler tcp://HOST:PORT"),
    partition: Optional[str] = typer.Option(None, "--partition", help="slurm partition"),
    time_limit: Optional[str] = typer.Option(None, "--time", help="slurm time limit per point (minutes or HH:MM:SS)"),
    mem: Optional[str] = typer.Option(None, "--mem", help="slurm memory per point, e.g. 4G"),
    array_parallelism: Optional[int] = typer.Option(None, "--array-parallelism", help="slurm: array tasks at once"),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="slurm: GPUs per point"),
    status: Optional[Path] = typer.Option(None, "--status", help="show the state of the sweep in DIR and exit"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    pdf: bool = typer.Option(False, "--pdf", help="also write report.pdf"),
    no_report: bool = typer.Option(False, "--no-report", help="skip the sweep report"),
):
    """Many analyze (or train) runs over a grid, locally, on Dask or on SLURM; resumable."""

    def go():
        if status is not None:
            return _sweep_status(status)
        import signal

        from gradrank.experiments import executors
        from gradrank.experiments import sweep as sw
        from gradrank.io import safe_name
        from gradrank.results import sweeps as sws

        sets = [*(set_ or []), *([f"compute.device={device}"] if device else [])]
        base, spec = sw.load(config, sets, seed, grid or [], seeds, zip_)
        if scheduler and executor != "dask":
            raise InputError("--scheduler needs --executor dask")
        pts = sw.points(base, spec)
        target = out or Path("runs") / f"{safe_name(base.output.name, 'sweep')}-{sw.sweep_id(base, spec)}"
        flags = {"partition": partition, "time": time_limit, "mem": mem, "array_parallelism": array_parallelism, "gpus": gpus}
        ex = executors.make(
            executor,
            target,
            jobs=jobs,
            scheduler=scheduler,
            slurm={**spec.slurm, **{k: v for k, v in flags.items() if v is not None}},
            dask=spec.dask,
        )
        store = sws.open_store(target, base, spec, pts, ex.info())

        def terminate(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            with _SweepProgress(f"sweep {target.name}") as progress:
                failed = sw.run(store, pts, spec.command, ex, sws.run_point, progress)
        finally:
            signal.signal(signal.SIGTERM, previous)
        if not no_report or pdf:
            from gradrank.report import render as report

            report.render_dir(target, (["html"] if not no_report else []) + (["pdf"] if pdf else []))
        typer.echo(f"sweep {target}: {len(pts) - len(failed)} of {len(pts)} points done; table {target / sw.TABLE}")
        if failed:
            typer.echo(f"{len(failed)} point(s) failed:", err=True)
            for p in failed:
                typer.echo(f"  {p.hash}  {sws.describe(p.values)}: {store.failure(p.hash).splitlines()[0]}", err=True)
            return 3

    run_guarded(go)


@app.command()
def report(
    directory: Path = typer.Argument(
        ..., help="a run directory (metrics.json) or a sweep directory (sweep.json)", show_default=False
    ),
    format_: str = typer.Option("html", "--format", help="html, pdf or html,pdf"),
    paper: Optional[str] = typer.Option(None, "--paper", help="PDF page size: a4 or letter (default: the run's output.paper)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="directory for the report files (default: DIRECTORY)"),
):
    """(Re)render the HTML/PDF report of a run, training run or sweep directory."""

    def go():
        from gradrank.report import render as report_mod

        formats = report_mod.parse_formats(format_)
        if paper is not None and paper not in report_mod.PAPERS:
            raise InputError(f"option --paper: must be a4 or letter, got {paper!r}")
        if (directory / "sweep.json").is_file():  # a sweep's table is rebuilt from its store first
            from gradrank.results import sweeps as sws

            sws.write_table(sws.Store(directory))
        for path in report_mod.render_dir(directory, formats, out, paper):
            typer.echo(f"wrote {path}")

    run_guarded(go)


@app.command()
def theory(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    as_json: bool = typer.Option(False, "--json", help="print the prediction as JSON"),
):
    """Predicted regime and growth exponents in n of ||S1||, ||S12||, ||S2||, ||E|| (docs/theory.md)."""

    def go():
        import json

        from gradrank.twolayer import theory as th

        cfg = load_config(config, set_, seed)
        if cfg.data.source != "spiked":
            raise InputError("config key 'data.source' must be spiked: the theory is for the spiked model")
        pred = th.predict(cfg)
        if as_json:
            typer.echo(json.dumps(pred.to_dict(), indent=2))
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        con = Console()
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


@app.command()
def scaling(
    config: Optional[Path] = ConfigArg,
    n: str = typer.Option("200,400,800", "--n", help="comma-separated sample sizes; d and m follow at the config's ratios"),
    seeds: int = typer.Option(5, "--seeds", help="seeds per size (seed .. seed+N-1)"),
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
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
        from gradrank import api
        from gradrank.config.resources import check_memory
        from gradrank.experiments import scaling as scaling_mod
        from gradrank.experiments.sweep import Progress

        check_memory(scaling_mod.sized(cfg, ns[-1]))
        target = output_dir(out, cfg, "scaling")
        t0 = time.perf_counter()
        with _SweepProgress("scaling") as bar:
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


class _TrainProgress:
    """Training progress: a rich bar on a terminal, one plain line per record in batch jobs."""

    def __init__(self, total: int, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.total, self.quiet, self.bar = total, quiet, None

    def __enter__(self):
        if self.console.is_terminal and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  s1 {task.fields[s1]}  outliers {task.fields[out]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, loss="?", s1="?", out="?")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task, completed=row["step"], loss=f"{row['train_loss']:.4g}", s1=f"{row['G']:.4g}", out=row["outliers"]
            )
        elif not self.quiet:
            typer.echo(
                f"step {row['step']}/{self.total}: train_loss={row['train_loss']:.6g} test_loss={row['test_loss']:.6g} "
                f"G={row['G']:.4g} S1={row['S1']:.4g} S2={row['S2']:.4g} E={row['E']:.4g} "
                f"outliers={row['outliers']} stable_rank={row['stable_rank']:.4g}",
                err=True,
            )


@app.command("train")
def train_cmd(
    config: Optional[Path] = ConfigArg,
    set_: Optional[List[str]] = SetOpt,
    seed: Optional[int] = SeedOpt,
    out: Optional[Path] = OutOpt,
    device: Optional[str] = DeviceOpt,
    weights: Optional[Path] = typer.Option(None, "--weights", help="start from W, a in an .npz file"),
    no_report: bool = typer.Option(False, "--no-report", help="skip report.html"),
    quiet: bool = QuietOpt,
):
    """Train W (gd by default; sgd, adam) with the gradient's decomposition tracked over steps."""

    def go():
        files = {"model.weights": str(weights), "model.weights_sha256": ""} if weights else None
        cfg = load_config(config, set_, seed, device, files)
        if no_report:
            cfg = cfg.replace(**{"output.report": False})
        from gradrank import api
        from gradrank.cli.summary import print_summary
        from gradrank.config.resources import check_memory
        from gradrank.pipeline import training as train_mod

        cfg = train_mod.resolve(cfg)
        check_memory(cfg)
        target = output_dir(out, cfg, "train")
        with _TrainProgress(cfg.train.steps, quiet) as progress:
            tr = train_mod.train(cfg, progress)
        api.save(tr, target)
        if tr.diverged:
            typer.echo(f"warning: {tr.message}; the trajectory up to step {tr.info['steps_done']} is saved", err=True)
        if quiet:
            typer.echo(str(target))
        else:
            print_summary(tr.result, target, "train")

    run_guarded(go)


@app.command()
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
        from gradrank.experiments import regpath as rp

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
        rp.write(target, cfg, res)
        if not quiet:
            for name, summ in res.summary.items():
                lc = summ["log_change"]
                typer.echo(
                    f"{name} (up to {summ['strength']:g}): ||S1|| x{math.exp(lc['S1']['mean']):.3g}, "
                    f"||S2|| x{math.exp(lc['S2']['mean']):.3g}, ||S1||/||S2|| x{math.exp(lc['S1_over_S2']['mean']):.3g}: {summ['verdict']}"
                )
        typer.echo(str(target))

    run_guarded(go)


def main() -> None:
    """The entry point. Usage errors (unknown option, bad option value) become one line and exit 2,
    like every other bad input, instead of click's three-line usage block."""
    try:
        code = app(prog_name="gradrank", standalone_mode=False)
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
