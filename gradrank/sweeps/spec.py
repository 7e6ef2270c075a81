"""Parameter sweeps: grids, point configs, the results store and its aggregated table.

A sweep is a base config plus axes (dotted config key -> list of values), combined as a
cartesian product ("product") or element-wise ("zip"), times an optional seed axis (seeds
always multiply: they are repetitions). Each point is one full `analyze` (or `train`, or `onestep`: every eta at the point's seed) run of
the shared backend, stored as a normal run directory under DIR/points/<config hash>/, or as
DIR/points/<config hash>.failed.json with the error text. DIR/sweep.json is the manifest and
DIR/results.csv the table rebuilt from the store (columns in docs/sweeps.md).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gradrank import config as config_mod
from gradrank.config import Config
from gradrank.core.records import SCHEMA, Record, check_schema
from gradrank.errors import InputError
from gradrank.studies import onestep, train
from gradrank.sweeps.executors import Outcome, check_scheduler_options

MANIFEST = "sweep.json"
TABLE = "results.csv"
FORMAT = "gradrank-sweep/1"
MODES = ("product", "zip")
COMMANDS = ("analyze", "train", "onestep")
SWEEP_KEYS = ("seeds", "mode", "command", "grid", "slurm", "dask")
MAX_LIST = 32  # metric lists longer than this (time series) stay out of the table
MAX_POINTS = 100_000  # a grid is sized before it is expanded: more points than this is a mistake


# ---------------------------------------------------------------------------- the manifest's records


_HASH = re.compile(r"[0-9a-f]{16}")  # a point's config hash, which names its directory
_TASK = re.compile(r"\d+(_\d+)?")  # a scheduler array task id


@dataclass
class ManifestPoint(Record):
    hash: str
    values: dict[str, Any]

    @classmethod
    def from_dict(cls, d, source: str = "sweep.json", _path: str = ""):
        point = super().from_dict(d, source, _path)
        if not _HASH.fullmatch(point.hash):  # never a path (`../x`) in a hand-edited manifest
            raise InputError(f"{source}: field '{_path}.hash' must be 16 lowercase hex digits, got {point.hash!r}")
        return point


@dataclass
class SlurmJob(Record):
    """A submitted scheduler array: tasks[i] runs points[i]."""

    job_id: str
    points: list[str]
    tasks: list[str]
    submitted: str = ""

    @classmethod
    def from_dict(cls, d, source: str = "sweep.json", _path: str = ""):
        job = super().from_dict(d, source, _path)
        if not job.job_id.isdigit():  # job ids reach scontrol/squeue command lines
            raise InputError(f"{source}: field '{_path}.job_id' must be digits, got {job.job_id!r}")
        for i, task in enumerate(job.tasks):
            if not _TASK.fullmatch(task):
                raise InputError(f"{source}: field '{_path}.tasks[{i}]' must be JOB or JOB_TASK digits, got {task!r}")
        return job


@dataclass(kw_only=True)
class SweepManifest(Record):
    """sweep.json: the sweep's identity (base config hash, axes, seeds, mode, command), its points,
    how it is executed, the scheduler jobs submitted and the package versions."""

    format: str
    schema: int = SCHEMA
    base_hash: str
    axes: dict[str, list[Any]]
    seeds: int
    mode: str
    command: str
    keys: list[str]
    base_config: dict[str, Any]
    points: list[ManifestPoint]
    executor: dict[str, Any] = field(default_factory=dict)
    slurm_jobs: list[SlurmJob] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""

    @classmethod
    def from_dict(cls, d, source: str = "sweep.json", _path: str = ""):
        """The manifest, validated: a foreign or hand-edited sweep.json is exit 2 naming the field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(f"{source}: not a gradrank sweep manifest (field 'format' is not {FORMAT!r})")
        check_schema(d, source)
        return super().from_dict(d, source, _path)


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
        if num > MAX_POINTS:
            raise InputError(f"--grid {key}: range count {num} is more than the {MAX_POINTS} points a sweep may have")
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
            raise InputError(f"{path}: unknown key 'sweep.{k}'{config_mod.suggest(k, SWEEP_KEYS)}")
    grid = table.get("grid", {})
    if not isinstance(grid, dict):
        raise InputError(f"{path}: 'sweep.grid' must be a table of KEY = [values]")
    axes = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InputError(f'{path}: sweep.grid."{key}" must be a non-empty list of values')
        axes[key] = values
    spec = SweepSpec(
        axes=axes,
        seeds=table.get("seeds", 0),
        mode=table.get("mode", "product"),
        command=table.get("command", "analyze"),
        slurm=table.get("slurm", {}),
        dask=table.get("dask", {}),
    )
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
    total = grid_size(spec)
    if total > MAX_POINTS:
        lengths = " x ".join(f"{k}: {len(v)}" for k, v in spec.axes.items()) + (f" x seeds: {spec.seeds}" if spec.seeds else "")
        raise InputError(f"sweep: the grid has {total} points ({lengths}), more than the {MAX_POINTS} allowed")
    return spec


def grid_size(spec: SweepSpec) -> int:
    """The number of points, from the axes' lengths (nothing is expanded)."""

    lengths = [len(v) for v in spec.axes.values()]
    combos = (min(lengths) if spec.mode == "zip" else math.prod(lengths)) if lengths else 1
    return combos * max(1, spec.seeds)


def load(
    path: str | Path | None,
    sets: Iterable[str] = (),
    seed: int | None = None,
    grid: Iterable[str] = (),
    seeds: int | None = None,
    zip_axes: bool = False,
    command: str | None = None,
) -> tuple[Config, SweepSpec]:
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
    if command is not None:
        spec.command = command
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
                cfg = train.resolve(cfg)
            elif spec.command == "onestep":  # each point: every eta of onestep.eta at the point's seed
                cfg = onestep.resolve(cfg)
            h = cfg.hash()
            if h in seen:
                raise InputError(f"sweep: points {seen[h]} and {values} have the same config")
            seen[h] = values
            out.append(Point(h, values, cfg))
    return out


def sweep_id(base: Config, spec: SweepSpec) -> str:
    """A short id of (base config, axes, seeds, mode, command): the default directory name."""
    key = json.dumps([base.hash(), spec.axes, spec.seeds, spec.mode, spec.command], sort_keys=True, default=str)
    return hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()[:8]


# ---------------------------------------------------------------------------- a point's run


@dataclass
class PointTask:
    """What a worker needs to run one point (small and picklable)."""

    root: str
    hash: str
    config: dict
    command: str
    threads: int = 0  # torch and BLAS threads in the worker (0 = leave as is)


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


def run(
    store, pts: list[Point], command: str, executor, point_fn: Callable, on_event: Callable[[Progress], None] | None = None
) -> list[Point]:
    """Run the points not yet done (failed ones are retried) and rebuild the table.

    `store` is the sweep's store (gradrank.sweeps.store.Store) and `point_fn(PointTask)` runs
    and stores one point in a worker (gradrank.sweeps.store.run_point). Returns the points
    that failed."""
    todo = [p for p in pts if store.state(p.hash) != "done"]
    store.set_aside_now = [a for p in todo if (a := store.set_aside(p.hash)) is not None]  # stored incompletely
    for p in todo:
        store.failed_path(p.hash).unlink(missing_ok=True)
    done = len(pts) - len(todo)
    failed = 0
    t0 = time.perf_counter()
    tasks = [PointTask(str(store.root), p.hash, p.config.to_dict(), command, executor.threads) for p in todo]
    notify = on_event or (lambda _: None)
    notify(Progress(len(pts), done, 0, 0, None, 0.0, len(todo)))
    try:
        for outcome in executor.run(point_fn, tasks, store):
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
        store.write_table()
    return [p for p in pts if store.state(p.hash) == "failed"]
