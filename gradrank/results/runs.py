"""Analysis and training run directories (`analyze`, `decompose`, `train`), written whole or not at
all by `files.write_dir`, and read back through their typed records.

Every JSON file carries `"schema": 1` first; metrics.json is `{"schema": 1, **metrics.to_dict(),
"config": ..., "provenance": ...}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gradrank import io
from gradrank.config import Config
from gradrank.config import from_dict as config_from_dict
from gradrank.core.onestep_records import OnestepSummary
from gradrank.core.records import Metrics, Record, TrainRecord, TrainSummary
from gradrank.errors import InputError
from gradrank.results.files import provenance, read_arrays, read_json, write_dir
from gradrank.results.tables import csv_text


def _analysis_files(cfg: Config, record: Record, timings: dict) -> dict[str, dict]:
    prov = provenance(cfg, timings)
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


# ---------------------------------------------------------------------------- reading


def metrics_from_dict(doc: dict, source: str):
    """metrics.json's record: a TrainSummary for "kind": "train", an OnestepSummary for "onestep",
    else the analysis' Metrics."""
    if doc.get("kind", "analyze") == "train":
        return TrainSummary.from_dict(doc, source)
    if doc.get("kind") == "onestep":
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
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    doc = read_json(path, "run directory")
    record = metrics_from_dict(doc, str(path))
    if not isinstance(doc.get("config"), dict):
        raise InputError(f"{path}: field 'config' is missing or not an object")
    try:
        cfg = config_from_dict(doc["config"])
    except InputError as exc:
        raise InputError(f"{path}: field 'config': {exc}") from None
    arrays = read_arrays(run_dir / "arrays.npz")
    prov = doc.get("provenance")
    return StoredRun(record, cfg, prov if isinstance(prov, dict) else {}, arrays)
