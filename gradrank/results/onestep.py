"""A one-step directory, written whole or not at all: onestep.csv (one row per (eta, seed)),
onestep.json (`OnestepResult`, with its resolved config, hash and package versions), metrics.json
(`OnestepSummary`, the per-eta summary a sweep's table reads), config.toml and provenance.json."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from gradrank import io
from gradrank.core.onestep_records import OnestepPoint, OnestepResult
from gradrank.results.files import read_record, write_dir
from gradrank.results.tables import csv_text

RESULT = "onestep.json"
TABLE = "onestep.csv"
COLUMNS = [f.name for f in fields(OnestepPoint)]


def table(result: OnestepResult) -> str:
    return csv_text(COLUMNS, [{c: getattr(p, c) for c in COLUMNS} for p in result.points])


def write(target: Path, result: OnestepResult) -> Path:
    cfg = result.config
    result.provenance = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, result.timings)
    files = {
        RESULT: result.to_dict(),
        "metrics.json": result.metrics().to_dict(),
        "provenance.json": {"config_hash": cfg.hash(), **result.provenance},
    }
    return write_dir(target, "onestep", cfg, files, {TABLE: table(result)})


def read(directory: Path) -> OnestepResult:
    """The result stored in a one-step directory (bad or foreign content: InputError naming file and field)."""
    return read_record(Path(directory) / RESULT, OnestepResult, "onestep directory")
