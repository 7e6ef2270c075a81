"""sweep and report: grids of runs on an executor, and (re)rendering any result directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gradrank.cli.common import (
    DeviceOpt,
    OutOpt,
    SeedOpt,
    SetOpt,
    app,
    example,
    run_guarded,
)
from gradrank.cli.progress import SweepProgress

MetricsOpt = typer.Option(
    None,
    "--metrics",
    help="sweep report: comma-separated results.csv columns or ratios a/b, e.g. norms.S1/norms.E,rank.outliers "
    "(default: the config's output.metrics, else norms.S2/norms.S1,rank.outliers)",
)
import signal

from gradrank.errors import InputError
from gradrank.io import safe_name


def _sweep_status(root: Path) -> int:
    from gradrank.sweeps import executors
    from gradrank.sweeps import store as sws

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


@app.command(
    epilog=example(
        "gradrank sweep sample_configs/fig2_activations.toml -o runs/fig2",
        "gradrank sweep --grid data.nu=0:0.6:7 --seeds 3 --metrics norms.S1/norms.E,rank.outliers",
        "gradrank sweep --status runs/fig2",
    )
)
def sweep(
    config: Optional[Path] = typer.Argument(None, help="TOML config, optionally with a [sweep] grid", show_default=False),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="an axis KEY=a,b,c or KEY=start:stop:num (repeatable)"),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="N seeds (seed .. seed+N-1) as an axis"),
    zip_: bool = typer.Option(False, "--zip", help="zip the axes instead of their cartesian product"),
    command: Optional[str] = typer.Option(
        None, "--command", help="what each point runs: analyze, train or onestep (default: sweep.command)"
    ),
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
    metrics: Optional[str] = MetricsOpt,
):
    """Many analyze (or train, or onestep) runs over a grid, locally, on Dask or on SLURM; resumable."""

    def go():
        if status is not None:
            return _sweep_status(status)

        from gradrank.sweeps import executors
        from gradrank.sweeps import spec as sw
        from gradrank.sweeps import store as sws

        sets = [*(set_ or []), *([f"compute.device={device}"] if device else [])]
        base, spec = sw.load(config, sets, seed, grid or [], seeds, zip_, command)
        if scheduler and executor != "dask":
            raise InputError("--scheduler needs --executor dask")
        if not no_report or pdf:  # the report's metrics, checked before any work (their columns after it)
            from gradrank.report.sweep import parse_metrics

            parse_metrics(metrics, None) if metrics else parse_metrics(
                base.output.metrics or None, None, "config key 'output.metrics'"
            )
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
        ex.check()  # an executor that cannot start is exit 2 before anything is written
        new = not (Path(target) / sw.MANIFEST).exists()
        existed = Path(target).exists()
        store = sws.open_store(target, base, spec, pts, ex.info())

        def terminate(signum, frame):
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        try:
            with SweepProgress(f"sweep {target.name}") as progress:
                failed = sw.run(store, pts, spec.command, ex, sws.run_point, progress)
        except executors.Unavailable:
            if new:  # nothing ran: the store this command created goes again (it was empty or absent)
                sws.remove_new_store(Path(target), keep_root=existed)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        for aside in store.set_aside_now:
            typer.echo(
                f"point {aside.name.split('.')[0]} was stored incompletely: recomputed (the old copy is {aside})", err=True
            )
        if not no_report or pdf:
            from gradrank.report import render as report

            report.render_dir(target, (["html"] if not no_report else []) + (["pdf"] if pdf else []), metrics=metrics or None)
        typer.echo(f"sweep {target}: {len(pts) - len(failed)} of {len(pts)} points done; table {target / sw.TABLE}")
        if failed:
            typer.echo(f"{len(failed)} point(s) failed:", err=True)
            for p in failed:
                typer.echo(f"  {p.hash}  {sws.describe(p.values)}: {store.failure(p.hash).splitlines()[0]}", err=True)
            return 3

    run_guarded(go)


@app.command(
    epilog=example(
        "gradrank report runs/nu03 --format html,pdf", "gradrank report runs/fig2 --metrics norms.S1/norms.E,norms.S2/norms.E"
    )
)
def report(
    directory: Path = typer.Argument(
        ...,
        help="a result directory: run or training run, sweep, scaling study, regularisation path or one-step study",
        show_default=False,
    ),
    format_: str = typer.Option("html", "--format", help="html, pdf or html,pdf"),
    paper: Optional[str] = typer.Option(None, "--paper", help="PDF page size: a4 or letter (default: the run's output.paper)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="directory for the report files (default: DIRECTORY)"),
    metrics: Optional[str] = MetricsOpt,
):
    """(Re)render the HTML/PDF report of any result directory (analyze, decompose, train, sweep, scaling, regpath, onestep)."""

    def go():
        from gradrank.report import render
        from gradrank.report.common import PAPERS, parse_formats

        formats = parse_formats(format_)
        if paper is not None and paper not in PAPERS:
            raise InputError(f"option --paper: must be a4 or letter, got {paper!r}")
        if (directory / "sweep.json").is_file():  # a sweep's table is rebuilt from its store first
            from gradrank.sweeps import store as sws

            sws.write_table(sws.Store(directory))
        for path in render.render_dir(directory, formats, out, paper, metrics=metrics or None):
            typer.echo(f"wrote {path}")

    run_guarded(go)
