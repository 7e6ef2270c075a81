"""A one-step directory, written whole or not at all: onestep.csv (one row per (eta, seed)),
onestep.json (the typed result, "schema": 1, with its resolved config, hash and package versions),
metrics.json (the per-eta summary a sweep's table reads), config.toml and provenance.json."""

from __future__ import annotations

import csv
import io as _io
import json
from dataclasses import fields
from pathlib import Path

from gradrank import io
from gradrank.config import to_toml
from gradrank.errors import InputError
from gradrank.experiments.onestep import OnestepPoint, OnestepResult

RESULT = "onestep.json"
TABLE = "onestep.csv"
COLUMNS = [f.name for f in fields(OnestepPoint)]


def table(result: OnestepResult) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for p in result.points:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (getattr(p, c) for c in COLUMNS)])
    return buf.getvalue()


def write(target: Path, result: OnestepResult) -> Path:
    cfg = result.config
    result.provenance = io.provenance(cfg.compute.device, cfg.compute.dtype, cfg.seed, result.timings)
    with io.staged_dir(Path(target), "onestep") as tmp:
        io.write_text(tmp / "config.toml", to_toml(cfg))
        io.write_json(tmp / RESULT, result.to_dict())
        io.write_text(tmp / TABLE, table(result))
        io.write_json(tmp / "metrics.json", result.metrics())
        io.write_json(tmp / "provenance.json", {"config_hash": cfg.hash(), **result.provenance})
    return Path(target)


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
