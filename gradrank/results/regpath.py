"""A regularisation path's directory (`gradrank regpath`), written whole or not at all: path.csv (one
row per (regulariser, seed, strength)) and path.json (`RegPath`: the per-regulariser summary, the
grids, seeds, steps, config and provenance); the figure is the report's, drawn from these files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gradrank.config import Config
from gradrank.core.records import Record, check_kind
from gradrank.results.files import provenance, read_record, write_dir
from gradrank.results.tables import csv_text
from gradrank.studies.regpath import COLUMNS, PathResult

RESULT = "path.json"
TABLE = "path.csv"


@dataclasses.dataclass
class Spread(Record):
    """Mean, min and max over seeds of log(x at the largest strength / x at 0)."""

    mean: float
    min: float
    max: float


@dataclasses.dataclass
class RegSummary(Record):
    """One regulariser's effect at its largest strength, and whether it has the same sign for every seed."""

    strength: float
    log_change: dict[str, Spread]
    seed_stable: bool
    verdict: str


@dataclasses.dataclass(kw_only=True)
class RegPath(Record):
    """path.json."""

    kind: str = "regpath"
    summary: dict[str, RegSummary]
    grids: dict[str, list[float]]
    seeds: list[int]
    steps: int
    config: Config
    config_hash: str
    provenance: dict[str, Any]

    @classmethod
    def from_dict(cls, d, source: str = RESULT, _path: str = ""):
        return check_kind(super().from_dict(d, source, _path), "regpath", source)

    @classmethod
    def of(cls, cfg: Config, res: PathResult) -> RegPath:
        return cls(
            summary={k: RegSummary.from_dict(v, "regpath") for k, v in res.summary.items()},
            grids=res.grids,
            seeds=res.seeds,
            steps=res.steps,
            config=cfg,
            config_hash=cfg.hash(),
            provenance=provenance(cfg, res.timings),
        )


def write(target: Path, res: PathResult) -> Path:
    """path.csv and path.json in `target` (where gradrank owns it)."""
    doc = RegPath.of(res.config, res).to_dict()
    return write_dir(target, "regpath", res.config, {RESULT: doc}, {TABLE: csv_text(COLUMNS, res.rows)})


def read(directory: Path) -> RegPath:
    return read_record(Path(directory) / RESULT, RegPath, "regpath directory")
