"""A sweep's store: the manifest, one run directory (or failure record) per point named by its
config hash, the worker function that runs and stores a point, and the aggregated results.csv
(columns in docs/sweeps.md)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from gradrank import config as config_mod
from gradrank import io
from gradrank.config import Config
from gradrank.config.resources import check_memory
from gradrank.core.records import SCHEMA
from gradrank.errors import InputError
from gradrank.results import onestep as onestep_out
from gradrank.results import runs as outputs
from gradrank.results.files import read_json
from gradrank.results.runs import metrics_from_dict, write_train
from gradrank.results.tables import csv_text
from gradrank.studies import analyze as analysis
from gradrank.studies import onestep, train
from gradrank.sweeps.executors import Outcome, limit_threads
from gradrank.sweeps.spec import FORMAT, MANIFEST, MAX_LIST, TABLE, Point, PointTask, SweepManifest, SweepSpec


def _run_analyze(cfg: Config, target: Path) -> None:
    check_memory(cfg)
    outputs.write_run(target, analysis.analyze(cfg))


def _run_train(cfg: Config, target: Path) -> None:
    check_memory(cfg)
    write_train(target, train.train(cfg))


def _run_onestep(cfg: Config, target: Path) -> None:
    check_memory(cfg)
    onestep_out.write(target, onestep.study(cfg))


RUNNERS: dict[str, Callable[[Config, Path], None]] = {"analyze": _run_analyze, "train": _run_train, "onestep": _run_onestep}
"""command -> runner that writes one point's run directory (atomically) at target."""


def run_point(task: PointTask) -> Outcome:
    """Run one point and store it (idempotent: a point already stored is not run again)."""
    store = Store(task.root)
    t0 = time.perf_counter()
    if store.state(task.hash) == "done":
        return Outcome(task.hash, "skipped")
    store.set_aside(task.hash)
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
        self.set_aside_now: list[Path] = []  # damaged point directories moved aside by this run

    def point_dir(self, h: str) -> Path:
        return self.points / h

    def failed_path(self, h: str) -> Path:
        return self.points / f"{h}.failed.json"

    def state(self, h: str) -> str:
        """done only for a point whose run directory is complete and unchanged (gradrank's marker
        lists exactly its files, hashes included) and whose metrics.json is this point's; a point
        stored incompletely (files missing, truncated, edited) is failed, and recomputed on resume."""
        if self.damage(h) is None:
            return "done"
        if self.point_dir(h).exists() or self.point_dir(h).is_symlink():
            return "failed"
        return "failed" if self.failed_path(h).is_file() else "pending"

    def damage(self, h: str) -> str | None:
        """None for a complete stored point, else what is wrong with it ("not stored" when absent)."""
        d = self.point_dir(h)
        if d.is_symlink() or not d.exists():
            return "not stored"
        if not io.owned(d):
            return "stored run is incomplete or was changed (files missing, truncated or edited)"
        try:
            metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return "stored run has no readable metrics.json"
        if not isinstance(metrics, dict) or metrics.get("config_hash") != h:
            return "stored metrics.json is not this point's (config_hash differs)"
        return None

    def set_aside(self, h: str) -> Path | None:
        """Move a damaged point's directory to points/<hash>.broken-N (kept, never deleted: it may
        hold someone's files) so the point can be computed again; the new name, or None."""
        d = self.point_dir(h)
        if not (d.exists() or d.is_symlink()) or self.damage(h) is None:
            return None
        for i in itertools.count(1):
            aside = self.points / f"{h}.broken-{i}"
            if not (aside.exists() or aside.is_symlink()):
                os.rename(d, aside)
                return aside
        return None

    def outcome(self, h: str) -> Outcome | None:
        """The stored outcome of a point, None while it is pending."""
        state = self.state(h)
        if state == "pending":
            return None
        return Outcome(h, state, self.failure(h) if state == "failed" else "")

    def failure(self, h: str) -> str:
        d = self.point_dir(h)
        if d.exists() or d.is_symlink():
            return self.damage(h) or ""
        try:
            return json.loads(self.failed_path(h).read_text())["error"]
        except (OSError, ValueError, KeyError):
            return "unreadable failure record"

    def record_failure(self, h: str, error: str, trace: str = "") -> None:
        self.points.mkdir(parents=True, exist_ok=True)
        io.write_json(
            self.failed_path(h),
            {"schema": SCHEMA, "hash": h, "error": error, "traceback": trace, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        )

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        m = read_json(path, "sweep directory")
        SweepManifest.from_dict(m, io.printable(str(path)))  # exit 2 naming the field of a foreign or damaged manifest
        return m

    def write_table(self) -> Path:
        return write_table(self)

    def write_manifest(self, m: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        io.write_json(self.root / MANIFEST, m)

    def add_slurm_job(self, job_id: str, hashes: list[str], tasks: list[str]) -> None:
        """Record a submitted array (tasks[i] runs hashes[i]) so other shells can follow it."""
        m = self.manifest()
        m.setdefault("slurm_jobs", []).append(
            {"job_id": job_id, "points": hashes, "tasks": tasks, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
        self.write_manifest(m)


def open_store(root: Path, base: Config, spec: SweepSpec, pts: list[Point], executor: dict) -> Store:
    """Create the store, or reopen it for the same sweep (a different sweep there is an error)."""
    store = Store(root)
    identity = {"base_hash": base.hash(), "axes": spec.axes, "seeds": spec.seeds, "mode": spec.mode, "command": spec.command}
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
    store.write_manifest(
        {
            "format": FORMAT,
            "schema": SCHEMA,
            **identity,
            "keys": keys,
            "base_config": base.to_dict(),
            "points": [{"hash": p.hash, "values": p.values} for p in pts],
            "executor": executor,
            "slurm_jobs": [],
            "versions": io.versions(("distributed", "submitit")),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    return store


def remove_new_store(root: Path, keep_root: bool) -> None:
    """Undo open_store for a sweep that never started: only a store with no point stored (every
    entry then is one this command wrote into an empty or absent directory)."""

    points = root / "points"
    if points.is_dir() and any(points.iterdir()):
        return
    for entry in root.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    if not keep_root:
        root.rmdir()


# ---------------------------------------------------------------------------- the table


def flatten(metrics: dict, prefix: str = "") -> dict[str, Any]:
    """Scalar metrics with dotted names; short lists indexed from 1 (`alignment.residue.1`)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if name in ("config", "provenance", "trust.warnings", "trust.notes", "config_hash"):
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


def table_rows(store: Store) -> tuple[list[str], list[dict]]:
    """(columns, rows): one row per point of the manifest, in grid order."""
    m = store.manifest()
    keys = m["keys"]
    rows, metric_cols = [], {}
    for p in m["points"]:
        h = p["hash"]
        row = {"point": h, **{k: p["values"].get(k) for k in keys}, "status": store.state(h), "error": ""}
        if row["status"] == "done":
            path = store.point_dir(h) / "metrics.json"
            try:
                metrics = metrics_from_dict(read_json(path), str(path)).to_dict()
            except InputError as exc:
                row["status"], row["error"] = "failed", str(exc)
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
    path = store.root / TABLE
    io.write_text(path, csv_text(*table_rows(store)))
    return path


def summary(store: Store) -> dict:
    """Counts and the failed points of a sweep directory."""
    m = store.manifest()
    states = {p["hash"]: store.state(p["hash"]) for p in m["points"]}
    failed = [
        {"hash": p["hash"], "values": p["values"], "error": store.failure(p["hash"])}
        for p in m["points"]
        if states[p["hash"]] == "failed"
    ]
    counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "failed", "pending")}
    return {"total": len(states), **counts, "failed_points": failed, "manifest": m}


def describe(values: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())
