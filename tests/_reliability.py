"""Rows for docs/reliability.md. Tests call `record(area, tried, outcome)` after their assertions
passed; with GRADRANK_RELIABILITY_LOG set the row is appended to that JSON-lines file (rendered by
scripts/reliability_table.py), otherwise nothing happens."""

from __future__ import annotations

import json
import os
import re


def record(area: str, tried: str, outcome: str) -> None:
    path = os.environ.get("GRADRANK_RELIABILITY_LOG")
    if path:
        row = {"area": area, "tried": _short(tried), "outcome": _short(outcome)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _short(text: str) -> str:
    """Without pytest's temporary directories, which differ on every run."""
    return re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+/", "", text)


def tree(root) -> set[str]:
    """Every path under root (hidden ones included), relative: to prove nothing was left behind."""
    from pathlib import Path

    root = Path(root)
    return {str(p.relative_to(root)) for p in root.rglob("*")}
