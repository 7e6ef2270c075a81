"""The one CSV writer: every table gradrank writes (trajectory.csv, results.csv, scaling.csv, path.csv,
layers.csv, onestep.csv)."""

from __future__ import annotations

import csv
import io as _io
import math


def cell(v) -> str:
    """A value as a CSV cell: floats in full precision (repr), None empty, and a user string that a
    spreadsheet would read as a formula prefixed with a quote."""
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    text = str(v)
    return "'" + text if text[:1] in ("=", "+", "@", "\t", "\r") else text


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """The table as CSV text, one line per row, `columns` in order (a missing cell is empty)."""
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([cell(row.get(c)) for c in columns])
    return buf.getvalue()
