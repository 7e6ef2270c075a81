"""A scaling study's directory (`gradrank scaling`), written whole or not at all: scaling.json
(`ScalingStudy`), scaling.csv (one row per (n, seed)) and config.toml."""

from __future__ import annotations

from pathlib import Path

from gradrank.results.files import provenance, read_record, write_dir
from gradrank.results.tables import csv_text
from gradrank.studies.scaling import ScalingResult, ScalingStudy

RESULT = "scaling.json"
TABLE = "scaling.csv"


def write(target: Path, result: ScalingResult) -> Path:
    cfg = result.config
    payload = ScalingStudy.of(result, provenance(cfg, {})).to_dict()
    table = csv_text(list(result.rows[0]), result.rows)
    return write_dir(target, "scaling", cfg, {RESULT: payload}, {TABLE: table})


def read(directory: Path) -> ScalingStudy:
    return read_record(Path(directory) / RESULT, ScalingStudy, "scaling directory")
