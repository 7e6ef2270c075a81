"""A one-step directory, written whole or not at all: onestep.csv (one row per (eta, seed)),
onestep.json (the typed result, "schema": 1, with its resolved config, hash and package versions),
metrics.json (the per-eta summary a sweep's table reads), config.toml and provenance.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from gradrank import io
from gradrank.core.records import SCHEMA, Record
from gradrank.errors import InputError
from gradrank.results.runs import write_dir
from gradrank.results.tables import csv_text
from gradrank.studies.onestep import OnestepPoint, OnestepResult

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
        "metrics.json": result.metrics(),
        "provenance.json": {"config_hash": cfg.hash(), **result.provenance},
    }
    return write_dir(target, "onestep", cfg, files, {TABLE: table(result)})


def read(directory: Path) -> OnestepResult:
    """The result stored in a one-step directory (bad or foreign content: InputError)."""
    path = Path(directory) / RESULT
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{directory}: not a gradrank onestep directory (no readable {RESULT})") from None
    try:
        return OnestepResult.from_dict(payload)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


@dataclasses.dataclass
class OnestepSummary(Record):
    """metrics.json of a one-step directory: per eta the means over seeds (what a sweep's table reads)."""

    kind: str
    steps: int
    rf_test_error: float | None
    best_eta: float
    best_test_error: float
    best_improvement: float | None
    eta: dict[str, dict[str, Any]]
    config_hash: str
    schema: int = SCHEMA

    @classmethod
    def from_dict(cls, d, source: str = "metrics.json", _path: str = ""):
        out = super().from_dict(d, source, _path)
        if out.kind != "onestep":
            raise InputError(f"{source}: field 'kind' must be 'onestep', got {out.kind!r}")
        return out
