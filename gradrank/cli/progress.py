"""Progress for long work: a rich bar on a terminal, plain log lines in batch jobs."""

from __future__ import annotations

import typer


class SweepProgress:
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


class TrainProgress:
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


class LayerProgress:
    """Per-layer progress of `gradrank layers`: a rich bar on a terminal, a plain line per layer otherwise."""

    def __init__(self, quiet: bool):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.quiet, self.bar = quiet, None

    def __enter__(self):
        if self.console.is_terminal and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]layers"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
                TimeRemainingColumn(), console=self.console,
            )  # fmt: skip
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, i: int, total: int, name: str) -> None:
        if self.bar is not None:
            from rich.markup import escape

            if not self.bar.tasks:
                self.task = self.bar.add_task("layers", total=total, name="")
            self.bar.update(self.task, completed=i, name=escape(name))
        elif not self.quiet:
            typer.echo(f"layer {i + 1}/{total}: {name}", err=True)
