"""Parameter sweeps: grids, point configs, the results store and its aggregated table.

A sweep is a base config plus axes (dotted config key -> list of values), combined as a
cartesian product ("product") or element-wise ("zip"), times an optional seed axis (seeds
always multiply: they are repetitions). Each point is one full `analyze` (or `train`) run of
the shared backend, stored as a normal run directory under DIR/points/<config hash>/, or as
DIR/points/<config hash>.failed.json with the error text. DIR/sweep.json is the manifest and
DIR/results.csv the table rebuilt from the store (columns in docs/sweeps.md). Pure Python at
import: torch is imported only inside a point's run.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import itertools
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gradrank import config as config_mod
from gradrank import io
from gradrank.config import Config
from gradrank.errors import InputError
from gradrank.executors import Outcome, check_scheduler_options, limit_threads

MANIFEST = "sweep.json"
TABLE = "results.csv"
FORMAT = "gradrank-sweep/1"
MODES = ("product", "zip")
COMMANDS = ("analyze", "train")
SWEEP_KEYS = ("seeds", "mode", "command", "grid", "slurm", "dask")
MAX_LIST = 32  # metric lists longer than this (time series) stay out of the table


# ---------------------------------------------------------------------------- the grid


@dataclass
class SweepSpec:
    """What to sweep: axes in order, a seed count (0 = no seed axis), how axes combine."""

    axes: dict[str, list] = field(default_factory=dict)
    seeds: int = 0
    mode: str = "product"
    command: str = "analyze"
    slurm: dict = field(default_factory=dict)
    dask: dict = field(default_factory=dict)


@dataclass
class Point:
    """One run of the sweep: its swept values, its full config and that config's hash."""

    hash: str
    values: dict[str, Any]
    config: Config


def parse_values(text: str, key: str = "--grid") -> list:
    """`a,b,c` (each value in TOML syntax, else a bare string) or a range `start:stop:num`."""
    parts = text.split(":")
    if len(parts) == 3:
        start, stop, num = (config_mod.parse_value(p.strip()) for p in parts)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop, num)):
            raise InputError(f"--grid {key}: range must be start:stop:num with numbers, got {text!r}")
        if not isinstance(num, int) or num < 1:
            raise InputError(f"--grid {key}: range count must be a positive integer, got {num!r}")
        step = (stop - start) / (num - 1) if num > 1 else 0.0
        values = [round(start + i * step, 12) for i in range(num)]
        if isinstance(start, int) and isinstance(stop, int) and all(float(v).is_integer() for v in values):
            values = [int(v) for v in values]
        return values
    values = [config_mod.parse_value(p.strip()) for p in text.split(",")]
    if not text.strip() or any(v == "" for v in values):
        raise InputError(f"--grid {key}: empty value in {text!r}")
    return values


def parse_grid(item: str) -> tuple[str, list]:
    """A `--grid KEY=VALUES` option."""
    if "=" not in item:
        raise InputError(f"--grid expects KEY=VALUES, got {item!r}")
    key, text = item.split("=", 1)
    key = key.strip()
    return key, parse_values(text, key)


def read_spec(path: str | Path | None) -> tuple[dict, SweepSpec]:
    """A TOML file split into (raw config without [sweep], its SweepSpec)."""
    if path is None:
        return {}, SweepSpec()
    raw = config_mod.read_toml(path)
    table = raw.pop("sweep", {})
    if not isinstance(table, dict):
        raise InputError(f"{path}: 'sweep' must be a table ([sweep])")
    for k in table:
        if k not in SWEEP_KEYS:
            raise InputError(f"{path}: unknown key 'sweep.{k}'{config_mod._suggest(k, SWEEP_KEYS)}")
    grid = table.get("grid", {})
    if not isinstance(grid, dict):
        raise InputError(f"{path}: 'sweep.grid' must be a table of KEY = [values]")
    axes = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: sweep.grid.\"{key}\" must be a non-empty list of values")
        axes[key] = values
    spec = SweepSpec(axes=axes, seeds=table.get("seeds", 0), mode=table.get("mode", "product"),
                     command=table.get("command", "analyze"), slurm=table.get("slurm", {}), dask=table.get("dask", {}))
    for name in ("slurm", "dask"):
        try:
            check_scheduler_options(name, getattr(spec, name), f"sweep.{name}")
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    return raw, spec


def check_spec(spec: SweepSpec) -> SweepSpec:
    """Validate the sweep-level options (axes are validated by the config, point by point)."""
    if isinstance(spec.seeds, bool) or not isinstance(spec.seeds, int) or spec.seeds < 0:
        raise InputError(f"sweep.seeds must be a non-negative integer, got {spec.seeds!r}")
    if spec.mode not in MODES:
        raise InputError(f"sweep.mode must be one of {', '.join(MODES)}; got {spec.mode!r}")
    if spec.command not in COMMANDS:
        raise InputError(f"sweep.command must be one of {', '.join(COMMANDS)}; got {spec.command!r}")
    if "seed" in spec.axes and spec.seeds:
        raise InputError("sweep: give either a 'seed' axis or seeds = N, not both")
    if spec.mode == "zip" and len({len(v) for v in spec.axes.values()}) > 1:
        lengths = ", ".join(f"{k}: {len(v)}" for k, v in spec.axes.items())
        raise InputError(f"sweep.mode = zip needs axes of equal length ({lengths})")
    return spec


def load(path: str | Path | None, sets: Iterable[str] = (), seed: int | None = None,
         grid: Iterable[str] = (), seeds: int | None = None, zip_axes: bool = False) -> tuple[Config, SweepSpec]:
    """Base config (unresolved: 'auto' is resolved per point) and the sweep, CLI options applied."""
    raw, spec = read_spec(path)
    raw = config_mod.apply_sets(raw, list(sets))
    if seed is not None:
        raw["seed"] = seed
    base = config_mod.from_dict(raw)
    for item in grid:
        key, values = parse_grid(item)
        spec.axes[key] = values
    if seeds is not None:
        spec.seeds = seeds
    if zip_axes:
        spec.mode = "zip"
    return base, check_spec(spec)


def points(base: Config, spec: SweepSpec) -> list[Point]:
    """Every point of the grid, in order; each config resolved, with per-point reports off."""
    keys = list(spec.axes)
    combos = (zip if spec.mode == "zip" else itertools.product)(*spec.axes.values()) if keys else [()]
    seed_values = [base.seed + i for i in range(spec.seeds)] if spec.seeds else [None]
    out, seen = [], {}
    for combo in combos:
        for s in seed_values:
            values = dict(zip(keys, combo))
            if s is not None:
                values["seed"] = s
            cfg = config_mod.resolve(base.replace(**values, **{"output.report": False, "output.pdf": False}))
            if spec.command == "train":  # what `gradrank train` resolves, so the hashes agree
                from gradrank import train

                cfg = train.resolve(cfg)
            h = cfg.hash()
            if h in seen:
                raise InputError(f"sweep: points {seen[h]} and {values} have the same config")
            seen[h] = values
            out.append(Point(h, values, cfg))
    return out


def sweep_id(base: Config, spec: SweepSpec) -> str:
    """A short id of (base config, axes, seeds, mode, command): the default directory name."""
    key = json.dumps([base.hash(), spec.axes, spec.seeds, spec.mode, spec.command], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------- a point's run


@dataclass
class PointTask:
    """What a worker needs to run one point (small and picklable)."""

    root: str
    hash: str
    config: dict
    command: str
    threads: int = 0  # torch and BLAS threads in the worker (0 = leave as is)


def _run_analyze(cfg: Config, target: Path) -> None:
    from gradrank import analysis, outputs
    from gradrank.resources import check_memory

    check_memory(cfg)
    outputs.write_run(target, analysis.analyze(cfg))


def _run_train(cfg: Config, target: Path) -> None:
    from gradrank import train
    from gradrank.resources import check_memory

    check_memory(cfg)
    train.write(target, train.train(cfg))


RUNNERS: dict[str, Callable[[Config, Path], None]] = {"analyze": _run_analyze, "train": _run_train}
"""command -> runner that writes one point's run directory (atomically) at target."""


def run_point(task: PointTask) -> Outcome:
    """Run one point and store it (idempotent: a point already stored is not run again)."""
    store = Store(task.root)
    t0 = time.perf_counter()
    if store.point_dir(task.hash).is_dir():
        return Outcome(task.hash, "skipped")
    if task.threads:
        limit_threads(task.threads)
    try:
        RUNNERS[task.command](config_mod.from_dict(task.config), store.point_dir(task.hash))
        store.failed_path(task.hash).unlink(missing_ok=True)
        return Outcome(task.hash, "done", seconds=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded, never stops the sweep
        error = f"{exc.__class__.__name__}: {exc}"
        store.record_failure(task.hash, error, traceback.format_exc())
        return Outcome(task.hash, "failed", error, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- the store


class Store:
    """A sweep directory: manifest, one entry per point (named by config hash), the table."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.points = self.root / "points"

    def point_dir(self, h: str) -> Path:
        return self.points / h

    def failed_path(self, h: str) -> Path:
        return self.points / f"{h}.failed.json"

    def state(self, h: str) -> str:
        if self.point_dir(h).is_dir():
            return "done"
        return "failed" if self.failed_path(h).is_file() else "pending"

    def outcome(self, h: str) -> Outcome | None:
        """The stored outcome of a point, None while it is pending."""
        state = self.state(h)
        if state == "pending":
            return None
        return Outcome(h, state, self.failure(h) if state == "failed" else "")

    def failure(self, h: str) -> str:
        try:
            return json.loads(self.failed_path(h).read_text())["error"]
        except (OSError, ValueError, KeyError):
            return "unreadable failure record"

    def record_failure(self, h: str, error: str, trace: str = "") -> None:
        self.points.mkdir(parents=True, exist_ok=True)
        io.write_json(self.failed_path(h), {"hash": h, "error": error, "traceback": trace,
                                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            raise InputError(f"{self.root}: not a gradrank sweep directory (no readable {MANIFEST})") from None
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise InputError(f"{path}: not a gradrank sweep manifest")
        return m

    def write_manifest(self, m: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        io.write_json(self.root / MANIFEST, m)

    def add_slurm_job(self, job_id: str, hashes: list[str], tasks: list[str]) -> None:
        """Record a submitted array (tasks[i] runs hashes[i]) so other shells can follow it."""
        m = self.manifest()
        m.setdefault("slurm_jobs", []).append({"job_id": job_id, "points": hashes, "tasks": tasks,
                                               "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.write_manifest(m)


def open_store(root: Path, base: Config, spec: SweepSpec, pts: list[Point], executor: dict) -> Store:
    """Create the store, or reopen it for the same sweep (a different sweep there is an error)."""
    store = Store(root)
    identity = {"base_hash": base.hash(), "axes": spec.axes, "seeds": spec.seeds, "mode": spec.mode,
                "command": spec.command}
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise InputError(f"{root}: exists and is not a directory (a sweep needs an empty directory or its own store)")
    if root.is_dir() and not (store.root / MANIFEST).exists() and any(root.iterdir()):
        raise InputError(f"{root}: exists and is not empty (a sweep needs an empty directory or its own store)")
    if (store.root / MANIFEST).exists():
        old = store.manifest()
        if {k: old.get(k) for k in identity} != json.loads(json.dumps(identity)):
            raise InputError(f"{root}: holds a different sweep ({MANIFEST}); choose another -o directory")
        old["executor"] = executor
        store.write_manifest(old)
        return store
    keys = list(spec.axes) + (["seed"] if spec.seeds else [])
    store.write_manifest({
        "format": FORMAT, **identity, "keys": keys, "base_config": base.to_dict(),
        "points": [{"hash": p.hash, "values": p.values} for p in pts],
        "executor": executor, "slurm_jobs": [], "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return store


def _versions() -> dict:
    """Package versions from their metadata (the sweep process itself never imports torch)."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("gradrank", "numpy", "scipy", "torch", "distributed", "submitit"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


# ---------------------------------------------------------------------------- running


@dataclass
class Progress:
    """Counts after each event (an outcome, or a periodic heartbeat with outcome None)."""

    total: int
    done: int
    failed: int
    running: int
    outcome: Outcome | None
    elapsed: float
    to_run: int


def run(store: Store, pts: list[Point], command: str, executor,
        on_event: Callable[[Progress], None] | None = None) -> list[Point]:
    """Run the points not yet done (failed ones are retried) and rebuild the table.

    Returns the points that failed."""
    todo = [p for p in pts if store.state(p.hash) != "done"]
    for p in todo:
        store.failed_path(p.hash).unlink(missing_ok=True)
    done = len(pts) - len(todo)
    failed = 0
    t0 = time.perf_counter()
    tasks = [PointTask(str(store.root), p.hash, p.config.to_dict(), command, executor.threads) for p in todo]
    notify = on_event or (lambda _: None)
    notify(Progress(len(pts), done, 0, 0, None, 0.0, len(todo)))
    try:
        for outcome in executor.run(run_point, tasks, store):
            if outcome is not None:
                if outcome.status == "failed":
                    if store.state(outcome.hash) != "failed":  # lost by the engine: never ran to the end
                        store.record_failure(outcome.hash, outcome.error)
                    failed += 1
                else:
                    done += 1
            notify(Progress(len(pts), done, failed, executor.running, outcome, time.perf_counter() - t0, len(todo)))
    finally:
        executor.close()
        write_table(store)
    return [p for p in pts if store.state(p.hash) == "failed"]


# ---------------------------------------------------------------------------- the table


def flatten(metrics: dict, prefix: str = "") -> dict[str, Any]:
    """Scalar metrics with dotted names; short lists indexed from 1 (`alignment.residue.1`)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if name in ("config", "provenance", "trust.warnings", "config_hash"):
            continue
        if isinstance(v, dict):
            out |= flatten(v, f"{name}.")
        elif isinstance(v, list):
            if len(v) <= MAX_LIST and all(_scalar(x) for x in v):
                out |= {f"{name}.{i + 1}": x for i, x in enumerate(v)}
        elif _scalar(v):
            out[name] = v
    return out


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    text = str(v)
    # a spreadsheet must not read a user string as a formula
    return "'" + text if text[:1] in ("=", "+", "@", "\t", "\r") else text


def table_rows(store: Store) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per point of the manifest, in grid order."""
    m = store.manifest()
    keys = m["keys"]
    rows, metric_cols = [], {}
    for p in m["points"]:
        h = p["hash"]
        row = {"point": h, **{k: p["values"].get(k) for k in keys}, "status": store.state(h), "error": ""}
        if row["status"] == "done":
            try:
                metrics = json.loads((store.point_dir(h) / "metrics.json").read_text())
            except (OSError, ValueError):
                row["status"], row["error"] = "failed", "unreadable metrics.json"
            else:  # a metric named like a swept key (data.nu) is prefixed: metrics.data.nu
                flat = {(f"metrics.{k}" if k in keys else k): v for k, v in flatten(metrics).items()}
                metric_cols |= dict.fromkeys(flat)
                row |= flat
        elif row["status"] == "failed":
            row["error"] = store.failure(h).splitlines()[0] if store.failure(h) else ""
        rows.append(row)
    return ["point", *keys, "status", "error", *metric_cols], rows


def write_table(store: Store) -> Path:
    """Rebuild DIR/results.csv from the store (atomic)."""
    columns, rows = table_rows(store)
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
    path = store.root / TABLE
    io.write_text(path, buf.getvalue())
    return path


def summary(store: Store) -> dict:
    """Counts and the failed points of a sweep directory."""
    m = store.manifest()
    states = {p["hash"]: store.state(p["hash"]) for p in m["points"]}
    failed = [{"hash": p["hash"], "values": p["values"], "error": store.failure(p["hash"])}
              for p in m["points"] if states[p["hash"]] == "failed"]
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "failed", "pending")}
    return {"total": len(states), **counts, "failed_points": failed, "manifest": m}


def describe(values: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())

