"""Run directories, each written whole or not at all by the one writer `write_dir` (analyze/decompose
runs, training runs, scaling studies, regularisation paths here; layers, onestep and advise runs in
their modules), and reading a run back through its typed records.

Every JSON file carries `"schema": 1` first; metrics.json is `{"schema": 1, **metrics.to_dict(),
"config": ..., "provenance": ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gradrank import io
from gradrank.config import Config, to_toml
from gradrank.core.records import SCHEMA, Metrics, Record, TrainRecord, TrainSummary, check_schema
from gradrank.errors import InputError
from gradrank.results.tables import csv_text


def write_dir(
    target: Path, kind: str, cfg: Config, json_files: dict[str, dict], text_files: dict[str, str], write_more=None
) -> Path:
    """The one run-directory writer (every command's): config.toml, JSON files (schema first) and text
    files staged together and moved into place, all or nothing. `write_more(tmp)` adds binary files."""
    with io.staged_dir(Path(target), kind) as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        for name, doc in json_files.items():
            io.write_json(tmp / name, {"schema": SCHEMA, **doc})
        for name, text in text_files.items():
            io.write_text(tmp / name, text)
        if write_more is not None:
            write_more(tmp)
    return Path(target)


def _provenance(cfg: Config, timings: dict | None) -> dict:
    return io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, timings)


def _analysis_files(cfg: Config, record: Record, timings: dict) -> dict[str, dict]:
    prov = _provenance(cfg, timings)
    return {
        "metrics.json": {**record.to_dict(), "config": cfg.to_dict(), "provenance": prov},
        "provenance.json": {"config_hash": cfg.hash(), **prov},
    }


def write_run(target: Path, result) -> Path:
    """config.toml, metrics.json, arrays.npz and provenance.json of an analysis (the report is rendered after)."""
    cfg = result.config
    return write_dir(
        target,
        "analyze",
        cfg,
        _analysis_files(cfg, result.metrics, result.timings),
        {},
        lambda tmp: io.write_npz(tmp / "arrays.npz", result.arrays),
    )


def write_train(target, tr) -> Path:
    """A training run: write_run's files (final analysis, metrics.json with "kind": "train") plus
    trajectory.csv, checkpoints.npz and weights.npz (W, a: reload with --weights)."""
    res = tr.result
    k = min(res.config.analysis.top_k, res.metrics.sizes.d, res.metrics.sizes.m)

    def arrays(tmp: Path) -> None:
        io.write_npz(tmp / "arrays.npz", res.arrays)
        io.write_npz(tmp / "checkpoints.npz", tr.checkpoints)
        io.write_npz(tmp / "weights.npz", {"W": tr.W.detach().cpu().double().numpy(), "a": tr.a.detach().cpu().double().numpy()})

    csv = {"trajectory.csv": csv_text(TrainRecord.columns(k), [r.to_dict() for r in tr.rows])}
    return write_dir(target, "train", res.config, _analysis_files(res.config, tr.summary(), res.timings), csv, arrays)


def write_scaling(target: Path, result) -> Path:
    """scaling.json, scaling.csv and config.toml."""
    from gradrank.studies.scaling import ScalingStudy

    cfg = result.config
    payload = ScalingStudy.of(result, _provenance(cfg, {})).to_dict()
    table = csv_text(list(result.rows[0]), result.rows)
    return write_dir(target, "scaling", cfg, {"scaling.json": payload}, {"scaling.csv": table})


def write_regpath(target: Path, cfg: Config, res) -> Path:
    """path.csv (one row per point) and path.json (summary, config, provenance); the figure is the
    report's (report/figures.py), drawn from these files."""
    from gradrank.studies.regpath import COLUMNS

    doc = {
        "kind": "regpath",
        "summary": res.summary,
        "grids": res.grids,
        "seeds": res.seeds,
        "steps": res.steps,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash(),
        "provenance": _provenance(cfg, res.timings),
    }
    texts = {"path.csv": csv_text(COLUMNS, res.rows)}
    return write_dir(target, "regpath", cfg, {"path.json": doc}, texts)


# ---------------------------------------------------------------------------- reading


def read_json(path: Path, what: str = "result directory") -> dict:
    """A gradrank JSON file as a dict of the current schema (exit 2 naming the file otherwise)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{path.parent}: not a gradrank {what} (no readable {path.name})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a gradrank file (expected a JSON object)")
    check_schema(doc, str(path))
    return doc


def metrics_from_dict(doc: dict, source: str):
    """metrics.json's record: a TrainSummary for "kind": "train", an OnestepSummary for "onestep",
    else the analysis' Metrics."""
    if doc.get("kind", "analyze") == "train":
        return TrainSummary.from_dict(doc, source)
    if doc.get("kind") == "onestep":
        from gradrank.results.onestep import OnestepSummary

        return OnestepSummary.from_dict(doc, source)
    if "kind" in doc and doc["kind"] != "analyze":
        raise InputError(f"{source}: field 'kind' is {doc['kind']!r}, not a gradrank run's metrics")
    return Metrics.from_dict(doc, source)


@dataclass
class StoredRun:
    """A run directory read back: its typed metrics, resolved config, provenance and arrays."""

    metrics: Metrics | TrainSummary
    config: Config
    provenance: dict
    arrays: dict


def read_run(run_dir: Path) -> StoredRun:
    """metrics.json through its record (exit 2 on a foreign or malformed file), the config it holds,
    arrays.npz without unpickling (empty when absent)."""
    from gradrank import config as config_mod

    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    doc = read_json(path, "run directory")
    record = metrics_from_dict(doc, str(path))
    if not isinstance(doc.get("config"), dict):
        raise InputError(f"{path}: field 'config' is missing or not an object")
    cfg = config_mod.from_dict(doc["config"])
    arrays = read_arrays(run_dir / "arrays.npz")
    prov = doc.get("provenance")
    return StoredRun(record, cfg, prov if isinstance(prov, dict) else {}, arrays)


def read_arrays(path: Path) -> dict:
    """The numeric arrays of an .npz file, never unpickled; {} when there is none."""
    import numpy as np

    if not Path(path).is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if z[k].dtype.kind in "biuf"}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"{path}: unreadable array file ({exc.__class__.__name__})") from None
