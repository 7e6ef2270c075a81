"""Shareable reports: one self-contained HTML file (inline SVG figures, no script, no fetch) and a
PDF printed from the same HTML by WeasyPrint.

`render_dir` renders whatever it finds in a directory: a sweep (sweep.json + results.csv) or a
run (metrics.json, arrays.npz, and trajectory.csv for training runs). Templates live in
gradrank/report/templates/ with autoescaping on, so every user string (run
name, file paths, swept keys) is shown as text.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import jinja2
import numpy as np

from gradrank import io
from gradrank.errors import InputError

FORMATS = ("html", "pdf")
PAPERS = {"a4": "A4", "letter": "letter"}


def parse_formats(text: str) -> tuple[str, ...]:
    """'html,pdf' -> ('html', 'pdf'), rejecting unknown names."""
    out = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise InputError(f"option --format: unknown format '{bad[0] if bad else text}' (use html, pdf or html,pdf)")
    return out


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None) -> list[Path]:
    """Write report.html / report.pdf for a run or sweep directory; returns the files written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory")
    if (run_dir / "sweep.json").is_file():
        return render_sweep(run_dir, formats, out_dir, paper)
    if (run_dir / "scaling.json").is_file():
        payload = _read_json(run_dir / "scaling.json", "scaling directory")
        paper = paper or _get(payload.get("config") or {}, "output.paper", "a4")
        return _write(render_scaling(payload, paper), formats, Path(out_dir or run_dir), paper)
    metrics = _read_json(run_dir / "metrics.json", "run directory")
    _check_metrics(metrics, run_dir / "metrics.json")
    try:
        cfg = metrics.get("config") or {}
        paper = paper or (cfg.get("output") or {}).get("paper", "a4")
        html = templates_env().get_template("run.html.j2").render(**run_context(run_dir, metrics), paper=PAPERS[paper])
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, jinja2.TemplateError) as exc:
        from gradrank.io import owned

        if owned(run_dir):  # gradrank's own, unchanged files: a bug in the report
            raise
        raise InputError(
            f"{run_dir / 'metrics.json'}: a value is not what gradrank writes (the run directory was edited: "
            f"{exc.__class__.__name__})"
        ) from None
    return _write(html, formats, Path(out_dir or run_dir), paper)


_METRIC_TYPES = {
    "norms": dict,
    "singular_values": list,
    "alignment": dict,
    "rank": dict,
    "regime": str,
    "config_hash": str,
    "config": dict,
}


def _check_metrics(metrics, path: Path) -> None:
    """A hand-edited or foreign metrics.json is bad input (exit 2), not an internal error."""
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: not a gradrank metrics file (expected a JSON object)")
    for key, kind in _METRIC_TYPES.items():
        if not isinstance(metrics.get(key), kind):
            raise InputError(f"{path}: field '{key}' is missing or not a {kind.__name__}")
    if not all(isinstance(v, (int, float)) for v in metrics["singular_values"]) or not all(
        isinstance(v, (int, float)) for v in metrics["norms"].values()
    ):
        raise InputError(f"{path}: fields 'singular_values' and 'norms' must hold numbers")


def render_sweep(sweep_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None) -> list[Path]:
    """Write the report of a sweep directory (sweep.json manifest + results.csv): phase diagrams and seed bands."""
    sweep_dir = Path(sweep_dir)
    manifest = _read_json(sweep_dir / "sweep.json", "sweep directory")
    rows = _read_csv(sweep_dir / "results.csv")
    if rows is None:
        raise InputError(f"{sweep_dir / 'results.csv'}: missing or unreadable (not a finished sweep directory)")
    paper = paper or _get(_base_config(manifest), "output.paper", "a4")
    html = templates_env().get_template("sweep.html.j2").render(**sweep_context(sweep_dir, manifest, rows), paper=PAPERS[paper])
    return _write(html, formats, Path(out_dir or sweep_dir), paper)


def html_to_pdf(html: str) -> bytes:
    """The PDF of a report; every fetch but inline data: URLs is refused (reports are self-contained)."""
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)

    def no_fetch(url, *args, **kwargs):
        if url.startswith("data:"):
            return weasyprint.default_url_fetcher(url, *args, **kwargs)
        raise ValueError(f"report fetches nothing (refused {url[:60]})")

    return weasyprint.HTML(string=html, url_fetcher=no_fetch).write_pdf()


def _write(html: str, formats, out_dir: Path, paper: str) -> list[Path]:
    """Render every format in memory first, then write each file atomically."""
    if paper not in PAPERS:
        raise InputError(f"config key 'output.paper' must be one of {', '.join(PAPERS)}; got {paper!r}")
    files = {"html": html.encode("utf-8", "backslashreplace")} if "html" in formats else {}
    if "pdf" in formats:
        files["pdf"] = html_to_pdf(html)
    return io.add_files(out_dir, {f"report.{fmt}": data for fmt, data in files.items()})


# ---------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"{path.parent}: not a gradrank {what} (no readable {path.name})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object")
    return obj


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """arrays.npz without unpickling; a missing file gives {} (figures needing it are left out)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if z[k].dtype.kind in "biuf"}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise InputError(f"{path}: unreadable array file ({exc.__class__.__name__})") from None


def _read_csv(path: Path) -> list[dict[str, str]] | None:
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable CSV ({exc.__class__.__name__})") from None


def _num(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV table (a column with any non-numeric, non-empty cell is skipped)."""
    cols = {}
    for name in rows[0] if rows else ():
        vals = [r.get(name) for r in rows]
        if all(v in (None, "", "nan", "NaN") or not math.isnan(_num(v)) for v in vals):
            cols[name] = np.array([_num(v) for v in vals])
    return cols


def _get(d: dict, dotted: str, default=None):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


# ---------------------------------------------------------------------------- single run


def headline(m: dict) -> str:
    """One sentence: regime, outliers above the bulk edge, both spikes' sizes and alignments, stable rank.

    The larger of the two spikes is matched with u_1 and the other with u_2."""
    out = m["rank"]["outliers"]
    nr, al = m["norms"], m["alignment"]
    i_res, i_spk = (0, 1) if nr["S1"] >= nr["S2"] else (1, 0)
    res = f"{al['residue'][i_res]:.2f}" if len(al["residue"]) > i_res else "–"
    spk = f"{al['spike'][i_spk]:.2f}" if len(al["spike"]) > i_spk else "–"
    return (
        f"{m['regime']}: {out} outlier{'' if out == 1 else 's'} above the bulk edge {_g(m['bulk_edge'])}; "
        f"residue spike ‖S1‖ = {_g(nr['S1'])} (|cos(u{_sub(i_res + 1)}, X_Bᵀr)| = {res}), "
        f"data spike ‖S2‖ = {_g(nr['S2'])} (|cos(u{_sub(i_spk + 1)}, q)| = {spk}); "
        f"stable rank {_g(m['rank']['stable'])}."
    )


def _g(x, digits: int = 3) -> str:
    """Numbers as the report prints them: `digits` significant figures."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)


def _sub(k: int) -> str:
    return str(k).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def run_context(run_dir: Path, metrics: dict) -> dict:
    """Everything the run template shows: headline, key numbers, figures, config and provenance."""
    from gradrank.report import figures

    arrays = _read_arrays(run_dir / "arrays.npz")
    cfg = metrics.get("config") or {}
    m = metrics
    has_analysis = all(k in m for k in ("norms", "rank", "alignment", "regime", "bulk_edge", "singular_values"))
    ctx = {
        "title": _get(cfg, "output.name")
        or f"{'training run' if m.get('kind') == 'train' else 'run'} {m.get('config_hash', '')}",
        "kind": m.get("kind", "analyze"),
        "m": m,
        "headline": headline(m) if has_analysis else None,
        "warnings": (_get(m, "trust.warnings", []) or [])
        + ([m.get("message") or "training diverged"] if m.get("diverged") else []),
        "config_sections": _config_sections(cfg),
        "provenance": m.get("provenance") or {},
        "config_hash": m.get("config_hash", ""),
        "figures": {},
        "key_numbers": [],
        "spikes": None,
        "alpha": None,
        "alpha_source": None,
        "training": None,
    }
    if has_analysis:
        ctx["key_numbers"] = _key_numbers(m, cfg)
        ctx["spikes"] = _spike_facts(m)
        if "singular_values" in arrays:
            ctx["figures"]["spectrum"] = figures.spectrum(
                arrays["singular_values"], arrays.get("E_singular_values"), m["norms"], m["bulk_edge"]
            )
        ctx["figures"]["norms"] = figures.term_norms(m["norms"], m.get("shares", {}))
        ctx["figures"]["alignment"] = figures.alignment(m["alignment"], m["rank"]["outliers"])
    if "bulk_eigenvalues" in arrays:
        alpha = _get(m, "data.alpha_fit")
        ctx["alpha_source"] = "fitted" if alpha is not None else "configured"
        alpha = alpha if alpha is not None else _get(cfg, "data.alpha")
        ctx["alpha"] = alpha
        ctx["figures"]["data"] = figures.data_diagnostics(
            arrays["bulk_eigenvalues"], alpha, _get(m, "data.zeta"), _get(m, "sizes.n")
        )
    rows = _read_csv(run_dir / "trajectory.csv")
    if rows:
        cols = _columns(rows)
        ctx["training"] = _training_facts(cols)
        ctx["figures"]["trajectory"] = figures.trajectory(cols)
    return ctx


def _key_numbers(m: dict, cfg: dict) -> list[tuple[str, str, str]]:
    """(label, dotted metrics key, formatted value) for the summary table."""
    rows = [("n × d × m", "sizes", f"{m['sizes']['n']} × {m['sizes']['d']} × {m['sizes']['m']}")] if "sizes" in m else []
    model = cfg.get("model", {})
    if model:
        rows.append(
            ("network", "config.model", f"{model.get('activation')}, {model.get('scaling')}, {_get(cfg, 'loss.kind')} loss")
        )
    for label, key in (
        ("ζ (spike strength)", "data.zeta"),
        ("ν", "data.nu"),
        ("regime", "regime"),
        ("outliers", "rank.outliers"),
        ("bulk edge", "bulk_edge"),
        ("‖G‖", "norms.G"),
        ("‖S1‖ residue spike", "norms.S1"),
        ("‖S12‖ interpolant", "norms.S12"),
        ("‖S2‖ data spike", "norms.S2"),
        ("‖E‖ bulk error", "norms.E"),
        ("stable rank", "rank.stable"),
        ("effective rank", "rank.effective"),
        ("energy in span(X_Bᵀr, q)", "energy.predicted_subspace"),
        ("energy in top-2 SVD", "energy.top2_subspace"),
        ("loss", "loss"),
        ("identity error", "identity_error"),
    ):
        v = _get(m, key)
        if v is not None:
            rows.append((label, key, _g(v)))
    return rows


def _spike_facts(m: dict) -> dict:
    s = m["singular_values"]
    nr = m["norms"]
    return {
        "s": [_g(v) for v in s[: max(2, m["rank"]["outliers"])]],
        "ratio": _g(nr["S2"] / nr["S1"]) if nr["S1"] > 0 else "∞",
        "labels": m.get("outlier_labels", []),
    }


def _training_facts(cols: dict[str, np.ndarray]) -> dict:
    """First/last values of the tracked quantities, and where the outlier count changes."""
    facts = dict.fromkeys(("steps", "records", "train_loss", "test_loss", "outliers", "stable_rank", "S1", "S2")) | {
        "changes": []
    }
    if "step" in cols and cols["step"].size:
        facts["steps"] = _g(float(cols["step"][-1]))
        facts["records"] = int(cols["step"].size)
    for key in ("train_loss", "test_loss", "outliers", "stable_rank", "S1", "S2"):
        if key in cols and cols[key].size:
            facts[key] = (_g(float(cols[key][0])), _g(float(cols[key][-1])))
    if "step" in cols and "outliers" in cols:
        o = cols["outliers"]
        facts["changes"] = [
            (_g(float(cols["step"][i])), int(o[i - 1]), int(o[i]))
            for i in range(1, o.size)
            if np.isfinite(o[i]) and np.isfinite(o[i - 1]) and o[i] != o[i - 1]
        ][:8]
    return facts


def _config_sections(cfg: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    top = [(k, _g(v)) for k, v in cfg.items() if not isinstance(v, dict)]
    out = [("run", top)] if top else []
    return out + [(name, [(k, _g(v)) for k, v in sec.items()]) for name, sec in cfg.items() if isinstance(sec, dict)]


# ---------------------------------------------------------------------------- sweeps

METRIC_PREFIXES = ("norms.", "rank.", "regime", "status", "seed", "shares.", "energy.", "alignment", "loss", "identity", "error")


def _axes(manifest: dict, rows: list[dict[str, str]]) -> dict[str, list]:
    """Swept keys and their values: from the manifest, else the dotted config columns that vary."""
    axes = manifest.get("axes")
    if isinstance(axes, dict) and axes:
        return {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in axes.items()}
    out = {}
    for name in rows[0] if rows else ():
        if "." in name and not name.startswith(METRIC_PREFIXES):
            vals = list(dict.fromkeys(r[name] for r in rows))
            if len(vals) > 1:
                out[name] = [(_num(v) if not math.isnan(_num(v)) else v) for v in vals]
    return out


def _base_config(manifest: dict) -> dict:
    return manifest.get("base_config") or manifest.get("config") or {}


def _match(cell: str | None, values: list) -> int | None:
    """Index of the axis value a CSV cell holds (numbers compared as floats)."""
    for i, v in enumerate(values):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if math.isclose(_num(cell), float(v), rel_tol=1e-9, abs_tol=1e-12):
                return i
        elif str(v) == cell or (isinstance(v, bool) and str(v).lower() == str(cell).lower()):
            return i
    return None


def sweep_context(sweep_dir: Path, manifest: dict, rows: list[dict[str, str]]) -> dict:
    """Phase diagrams over the first two swept keys, seed bands over the first, a per-point table."""
    from gradrank.report import figures

    axes = _axes(manifest, rows)
    keys = list(axes)[:1] if manifest.get("mode") == "zip" else list(axes)  # zipped axes move together: one x axis
    ok = [r for r in rows if r.get("status", "done") in ("ok", "done", "")]
    failed = [r for r in rows if r.get("status") == "failed"]
    base = _base_config(manifest)
    prov = manifest.get("provenance") or {
        "versions": manifest.get("versions") or {},
        "config_hash": manifest.get("base_hash", ""),
    }
    ctx = {
        "title": _get(base, "output.name") or f"sweep {sweep_dir.name}",
        "axes": axes,
        "n_rows": len(rows),
        "n_ok": len(ok),
        "n_pending": len(rows) - len(ok) - len(failed),
        "mode": manifest.get("mode", "product"),
        "failed": [{k: r.get(k, "") for k in (*axes, "seed", "error") if k in r} for r in failed],
        "seeds": manifest.get("seeds"),
        "figures": {},
        "config_sections": _config_sections(base),
        "provenance": prov,
        "columns": list(rows[0]) if rows else [],
        "regime_counts": [],
        "table": [],
        "table_keys": [],
        "more_axes": [],
    }
    if not keys or not ok:
        return ctx
    xkey, ykey = keys[0], (keys[1] if len(keys) > 1 else None)
    xs, ys = axes[xkey], (axes[ykey] if ykey else [None])
    cells: dict[tuple[int, int], list[dict]] = {}
    for r in ok:
        i = _match(r.get(xkey), xs)
        j = _match(r.get(ykey), ys) if ykey else 0
        if i is not None and j is not None:
            cells.setdefault((j, i), []).append(r)

    def ratio(r):
        s1, s2 = _num(r.get("norms.S1")), _num(r.get("norms.S2"))
        return s2 / s1 if s1 > 0 else math.nan

    if any("regime" in r for r in ok):
        grid = [[_mode([r.get("regime") for r in cells.get((j, i), [])]) for i in range(len(xs))] for j in range(len(ys))]
        ctx["figures"]["regime"] = figures.regime_map(xkey, xs, ykey, ys if ykey else [""], grid)
        ctx["regime_counts"] = Counter(r.get("regime") for r in ok).most_common()
    have_ratio = any(np.isfinite(ratio(r)) for r in ok)
    if have_ratio:
        R = np.array([[_mean([ratio(r) for r in cells.get((j, i), [])])[0] for i in range(len(xs))] for j in range(len(ys))])
        ctx["figures"]["ratio"] = figures.ratio_map(xkey, xs, ykey, ys if ykey else [""], R)
    ctx["figures"]["lines"] = _seed_band_figure(xkey, xs, ykey, ys, cells, ratio)
    ctx["table_keys"] = [k for k in (xkey, ykey) if k]
    ctx["table"] = [
        {
            "x": _g(xs[i]) if isinstance(xs[i], float) else xs[i],
            "y": (_g(ys[j]) if isinstance(ys[j], float) else ys[j]) if ykey else None,
            "runs": len(rs),
            "regime": _mode([r.get("regime") for r in rs]) or "–",
            "S1": _g(_mean([_num(r.get("norms.S1")) for r in rs])[0]),
            "S2": _g(_mean([_num(r.get("norms.S2")) for r in rs])[0]),
            "ratio": _g(_mean([ratio(r) for r in rs])[0]),
            "outliers": _g(_mean([_num(r.get("rank.outliers")) for r in rs])[0]),
        }
        for (j, i), rs in sorted(cells.items())
    ]
    ctx["more_axes"] = keys[2:]
    return ctx


def _seed_band_figure(xkey, xs, ykey, ys, cells, ratio) -> str | None:
    from gradrank.report import figures

    def band(values_at):  # (mean, sd) arrays over the x values
        stats = [_mean(values_at(i)) for i in range(len(xs))]
        return np.array([s[0] for s in stats]), np.array([s[1] for s in stats])

    def col(name, j=None):
        return lambda i: [
            _num(r.get(name)) if name != "ratio" else ratio(r)
            for jj in (range(len(ys)) if j is None else [j])
            for r in cells.get((jj, i), [])
        ]

    series = {}
    if ykey is None:
        terms = [(k, *band(col(f"norms.{k}"))) for k in ("S1", "S12", "S2", "E")]
        series["term norms"] = [t for t in terms if np.isfinite(t[1]).any()]
        series["‖S2‖ / ‖S1‖"] = [("S2/S1", *band(col("ratio")))]
        series["rank"] = [(lab, *band(col(k))) for lab, k in (("outliers", "rank.outliers"), ("stable rank", "rank.stable"))]
    else:
        shown = list(range(len(ys)))[:8]
        series["‖S2‖ / ‖S1‖"] = [(f"{ykey}={_g(ys[j])}", *band(col("ratio", j))) for j in shown]
        series["outliers"] = [(f"{ykey}={_g(ys[j])}", *band(col("rank.outliers", j))) for j in shown]
    series = {t: [ln for ln in lines if np.isfinite(ln[1]).any()] for t, lines in series.items()}
    series = {t: lines for t, lines in series.items() if lines}
    return figures.seed_bands(xkey, xs, series) if series else None


def _mean(values) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], float)
    return (float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0) if v.size else (math.nan, math.nan)


def _mode(values) -> str | None:
    """The most frequent value (ties: the first seen), None for an empty cell."""
    vals = [v for v in values if v]
    return Counter(vals).most_common(1)[0][0] if vals else None


# ---------------------------------------------------------------------------- templates


def templates_dir() -> Path:
    """The templates shipped inside the package (gradrank/report/templates)."""
    return Path(__file__).resolve().parent / "templates"


def templates_env():
    """The Jinja environment every report renders with (autoescaping on)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["g"] = _g
    return env


def render_scaling(payload: dict, paper: str = "a4") -> str:
    """The scaling study's HTML report (templates/scaling.html.j2)."""
    title = _get(payload.get("config") or {}, "output.name", "") or f"scaling {payload.get('config_hash', '')}"
    return templates_env().get_template("scaling.html.j2").render(s=payload, title=title, paper=PAPERS[paper])
