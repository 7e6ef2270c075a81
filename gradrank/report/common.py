"""What every report shares: the formats and paper sizes, the Jinja environment, number formatting,
reading a result's CSV tables, drawing a figure without costing the report, the config table, the
rounding floor, and writing report.html / report.pdf atomically where gradrank owns the directory."""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path

import jinja2
import numpy as np

from gradrank import io
from gradrank.errors import InputError

FORMATS = ("html", "pdf")


PAPERS = {"a4": "A4", "letter": "letter"}
ROUNDING = 1e4  # a term norm below ROUNDING · eps · ‖G‖ is zero in exact arithmetic (rounding level)


def parse_formats(text: str) -> tuple[str, ...]:
    """'html,pdf' -> ('html', 'pdf'), rejecting unknown names."""
    out = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise InputError(f"option --format: unknown format '{bad[0] if bad else text}' (use html, pdf or html,pdf)")
    return out


def html_to_pdf(html: str) -> bytes:
    """The PDF of a report; every fetch but inline data: URLs is refused (reports are self-contained)."""
    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)

    def no_fetch(url, *args, **kwargs):
        if url.startswith("data:"):
            return weasyprint.default_url_fetcher(url, *args, **kwargs)
        raise ValueError(f"report fetches nothing (refused {url[:60]})")

    return weasyprint.HTML(string=html, url_fetcher=no_fetch).write_pdf()


def write_report(html: str, formats, out_dir: Path, paper: str) -> list[Path]:
    """Render every format in memory first, then write each file atomically."""
    if paper not in PAPERS:
        raise InputError(f"config key 'output.paper' must be one of {', '.join(PAPERS)}; got {paper!r}")
    files = {"html": html.encode("utf-8", "backslashreplace")} if "html" in formats else {}
    if "pdf" in formats:
        files["pdf"] = html_to_pdf(html)
    return io.add_files(out_dir, {f"report.{fmt}": data for fmt, data in files.items()})


def templates_dir() -> Path:
    """The templates shipped inside the package (gradrank/report/templates)."""
    return Path(__file__).resolve().parent / "templates"


def templates_env():
    """The Jinja environment every report renders with (autoescaping on)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["g"] = g
    return env


def g(x, digits: int = 3) -> str:
    """Numbers as the report prints them: `digits` significant figures."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)


def subscript(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def read_csv(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable CSV ({exc.__class__.__name__})") from None


def num(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def numeric_columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV table (a column with any non-numeric, non-empty cell is skipped)."""
    cols = {}
    for name in rows[0] if rows else ():
        vals = [r.get(name) for r in rows]
        if all(v in (None, "", "nan", "NaN") or not math.isnan(num(v)) for v in vals):
            cols[name] = np.array([num(v) for v in vals])
    return cols


def get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


def mean_sd(values) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    return (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0) if v.size else (math.nan, math.nan)


def most_common(values) -> str | None:
    """The most frequent value (ties: the first seen), None for an empty cell."""
    vals = [v for v in values if v]
    return Counter(vals).most_common(1)[0][0] if vals else None


def drawer(ctx: dict):
    """draw(key, what, fn, *args): ctx["figures"][key] = fn(*args), or a warning naming the figure
    that failed (a figure never costs a report, nor a report a run)."""

    def draw(key: str, what: str, fn, *args) -> None:
        try:
            ctx["figures"][key] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - any figure failure is reported, never raised
            ctx["warnings"].append(f"figure '{what}' could not be drawn ({exc.__class__.__name__}: {exc})")

    return draw


def config_sections(cfg: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    top = [(k, g(v)) for k, v in cfg.items() if not isinstance(v, dict)]
    out = [("run", top)] if top else []
    return out + [(name, [(k, g(v)) for k, v in sec.items()]) for name, sec in cfg.items() if isinstance(sec, dict)]


def rounding_floor(base: dict) -> float:
    """ROUNDING · eps of the run's dtype: a term norm at most this times ‖G‖ is zero in exact arithmetic."""
    dtype = get(base, "compute.dtype", "float64")
    return ROUNDING * float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
