"""HTML/PDF reports rendered from the Jinja2 templates shipped in gradrank.templates."""

from __future__ import annotations

import json
from pathlib import Path

from gradrank import io
from gradrank.errors import InputError


def _env():
    import jinja2

    from importlib.resources import files

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(files("gradrank.templates"))), autoescape=True)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flatten(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", str(v)))
    return rows


def render_dir(run_dir: Path, formats=("html",)) -> list[Path]:
    run_dir = Path(run_dir)
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"{run_dir}: not a gradrank run directory (no readable metrics.json)") from None
    cfg = metrics["config"]
    title = cfg["output"]["name"] or f"run {metrics['config_hash']}"
    headline = f"{metrics['regime']}: {metrics['rank']['outliers']} outlier(s); ||S1|| = {metrics['norms']['S1']:.3g}, ||S2|| = {metrics['norms']['S2']:.3g}"
    html = _env().get_template("run.html.j2").render(title=title, headline=headline, config_rows=_flatten(cfg))
    out = run_dir / "report.html"
    io.write_text(out, html)
    return [out]
