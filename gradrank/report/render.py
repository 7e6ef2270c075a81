"""Shareable reports: one self-contained HTML file (inline SVG figures, no script, no fetch) and a
PDF printed from the same HTML by WeasyPrint.

`render_dir` renders whatever it finds in a directory: a sweep (sweep.json + results.csv), a
scaling study (scaling.json), a one-step study (onestep.json) or a run (metrics.json, arrays.npz,
and trajectory.csv for training runs). Templates live in
gradrank/report/templates/ with autoescaping on, so every user string (run
name, file paths, swept keys) is shown as text.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import Counter
from pathlib import Path

import jinja2
import numpy as np

from gradrank import io
from gradrank.errors import InputError
from gradrank.results.files import read_arrays, read_json

FORMATS = ("html", "pdf")
PAPERS = {"a4": "A4", "letter": "letter"}


def parse_formats(text: str) -> tuple[str, ...]:
    """'html,pdf' -> ('html', 'pdf'), rejecting unknown names."""
    out = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise InputError(f"option --format: unknown format '{bad[0] if bad else text}' (use html, pdf or html,pdf)")
    return out


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **options) -> list[Path]:
    """Write report.html / report.pdf for any result directory; returns the files written.

    The first RENDERERS entry whose marker file the directory holds renders it; `options` (e.g. a
    sweep's metrics) go to that renderer."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory")
    for marker, renderer in RENDERERS:
        if (run_dir / marker).is_file():
            return renderer(run_dir, formats, out_dir, paper, **options)
    markers = ", ".join(m for m, _ in RENDERERS)
    raise InputError(f"{run_dir}: not a gradrank result directory (none of {markers})")


def render_run(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_) -> list[Path]:
    """An analyze/decompose/train run directory (metrics.json, arrays.npz, trajectory.csv)."""
    metrics = read_metrics(run_dir / "metrics.json")
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


def render_scaling_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A scaling study directory (scaling.json)."""
    from gradrank.studies.scaling import ScalingStudy

    payload = read_json(run_dir / "scaling.json", "scaling directory")
    ScalingStudy.from_dict(payload, str(run_dir / "scaling.json"))
    paper = paper or _get(payload.get("config") or {}, "output.paper", "a4")
    return _write(render_scaling(payload, paper), formats, Path(out_dir or run_dir), paper)


def render_layers_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A per-layer analysis directory (layers.json)."""
    from gradrank.report.layers import render_layers

    html, paper = render_layers(run_dir, paper)
    return _write(html, formats, Path(out_dir or run_dir), paper)


def render_advice_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A projector advice directory (advice.json)."""
    from gradrank.report.advice import render_advice

    paper = paper or _get(read_json(run_dir / "advice.json", "advice directory").get("config") or {}, "output.paper", "a4")
    return _write(render_advice(run_dir, paper), formats, Path(out_dir or run_dir), paper)


def render_onestep_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A one-step study directory (onestep.json + onestep.csv)."""
    from gradrank.report import onestep
    from gradrank.results.onestep import read

    result = read(run_dir)
    paper = paper or result.config.output.paper
    return _write(onestep.render(result, PAPERS[paper]), formats, Path(out_dir or run_dir), paper)


def render_regpath_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_):
    """A regularisation path directory (path.json + path.csv)."""
    from gradrank.results.regpath import RegPath

    doc = read_json(run_dir / "path.json", "regpath directory")
    RegPath.from_dict(doc, str(run_dir / "path.json"))
    rows = _read_csv(run_dir / "path.csv")
    if not rows:
        raise InputError(f"{run_dir / 'path.csv'}: missing or empty (not a finished regpath directory)")
    paper = paper or _get(doc.get("config") or {}, "output.paper", "a4")
    html = templates_env().get_template("regpath.html.j2").render(**regpath_context(doc, rows), paper=PAPERS[paper])
    return _write(html, formats, Path(out_dir or run_dir), paper)


def read_metrics(path: Path) -> dict:
    """metrics.json read through its typed record (a foreign or malformed file is exit 2 naming the
    file and field), as the dict the templates read: the record's keys, config and provenance."""
    from gradrank.results.runs import metrics_from_dict

    doc = read_json(path, "run directory")
    record = metrics_from_dict(doc, str(path))
    for key in ("config", "provenance"):
        if not isinstance(doc.get(key, {}), dict):
            raise InputError(f"{path}: field '{key}' must be an object")
    return {**record.to_dict(), "config": doc.get("config") or {}, "provenance": doc.get("provenance") or {}}


def render_sweep(
    sweep_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, metrics: str | None = None, **_
) -> list[Path]:
    """Write the report of a sweep directory (sweep.json manifest + results.csv): phase diagrams and seed bands."""
    sweep_dir = Path(sweep_dir)
    from gradrank.sweeps.spec import SweepManifest

    manifest = read_json(sweep_dir / "sweep.json", "sweep directory")
    SweepManifest.from_dict(manifest, str(sweep_dir / "sweep.json"))
    rows = _read_csv(sweep_dir / "results.csv")
    if rows is None:
        raise InputError(f"{sweep_dir / 'results.csv'}: missing or unreadable (not a finished sweep directory)")
    paper = paper or _get(_base_config(manifest), "output.paper", "a4")
    html = (
        templates_env()
        .get_template("sweep.html.j2")
        .render(**sweep_context(sweep_dir, manifest, rows, metrics), paper=PAPERS[paper])
    )
    return _write(html, formats, Path(out_dir or sweep_dir), paper)


# marker file -> renderer(dir, formats, out_dir, paper, **options); a new result kind adds one line
RENDERERS = [
    ("sweep.json", render_sweep),
    ("scaling.json", render_scaling_dir),
    ("path.json", render_regpath_dir),
    ("onestep.json", render_onestep_dir),
    ("layers.json", render_layers_dir),
    ("advice.json", render_advice_dir),
    ("metrics.json", render_run),
]


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
    """One sentence from one rule: the regime, then each outlier (only values above the bulk edge)
    with the label the outlier rule gave it (metrics.outlier_labels: residue, spike or mixed) and
    the |cos| that earned it, then the largest term (the one s_1 comes from) beside the others."""
    out = m["rank"]["outliers"]
    nr, al, s = m["norms"], m["alignment"], m["singular_values"]
    labels = list(m.get("outlier_labels") or [])
    parts = []
    for i, lab in enumerate(labels[: min(out, 2)]):
        u, sv = f"u{_sub(i + 1)}", f"s{_sub(i + 1)} = {_g(s[i])}" if i < len(s) else ""
        res, spk = _cos(al, "residue", i), _cos(al, "spike", i)
        if lab == "residue":
            parts.append(f"{u} ({sv}) is the residue direction (|cos({u}, X_Bᵀr)| = {res})")
        elif lab == "spike":
            parts.append(f"{u} ({sv}) is the data spike direction (|cos({u}, q)| = {spk})")
        else:
            parts.append(f"{u} ({sv}) is aligned with neither (|cos| {res} with X_Bᵀr, {spk} with q)")
    terms = [k for k in ("S1", "S12", "S2", "E") if k in nr]
    top = max(terms, key=lambda k: nr[k])
    names = {"S1": "residue spike", "S12": "interpolant", "S2": "data spike", "E": "bulk"}
    others = ", ".join(f"‖{k}‖ = {_g(nr[k])}" for k in terms if k != top)
    outliers = f"{out} outlier{'' if out == 1 else 's'} above the bulk edge {_g(m['bulk_edge'])}"
    return (
        f"{m['regime']}: {outliers}{': ' + '; '.join(parts) if parts else ''}. "
        f"Largest term: the {names[top]} ‖{top}‖ = {_g(nr[top])} ({others}); stable rank {_g(m['rank']['stable'])}."
    )


def _cos(al: dict, key: str, i: int) -> str:
    v = al.get(key) or []
    return f"{v[i]:.2f}" if i < len(v) else "–"


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

    arrays = read_arrays(run_dir / "arrays.npz")
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
        + (_get(m, "trust.notes", []) or [])
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
    draw = _drawer(ctx)
    if has_analysis:
        ctx["key_numbers"] = _key_numbers(m, cfg)
        ctx["spikes"] = _spike_facts(m)
        if "singular_values" in arrays:
            draw(
                "spectrum",
                "singular values of G",
                figures.spectrum,
                arrays["singular_values"],
                arrays.get("E_singular_values"),
                m["norms"],
                m["bulk_edge"],
                rounding_floor(cfg),
            )
        draw("norms", "term norms", figures.term_norms, m["norms"], m.get("shares", {}))
        draw("alignment", "alignment heatmap", figures.alignment, m["alignment"], m["rank"]["outliers"])
    if "bulk_eigenvalues" in arrays:
        alpha = _get(m, "data.alpha_fit")
        ctx["alpha_source"] = "fitted" if alpha is not None else "configured"
        alpha = alpha if alpha is not None else _get(cfg, "data.alpha")
        ctx["alpha"] = alpha
        draw(
            "data",
            "bulk spectrum",
            figures.data_diagnostics,
            arrays["bulk_eigenvalues"],
            alpha,
            _get(m, "data.zeta"),
            _get(m, "sizes.n"),
            _get(m, "data.alpha_fit_r2") if ctx["alpha_source"] == "fitted" else None,
        )
    rows = _read_csv(run_dir / "trajectory.csv")
    if rows:
        cols = _columns(rows)
        ctx["training"] = _training_facts(cols)
        draw("trajectory", "training trajectory", figures.trajectory, cols)
    return ctx


def _drawer(ctx: dict):
    """draw(key, what, fn, *args): ctx["figures"][key] = fn(*args), or a warning naming the figure
    that failed (a figure never costs a report, nor a report a run)."""

    def draw(key: str, what: str, fn, *args) -> None:
        try:
            ctx["figures"][key] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - any figure failure is reported, never raised
            ctx["warnings"].append(f"figure '{what}' could not be drawn ({exc.__class__.__name__}: {exc})")

    return draw


def _key_numbers(m: dict, cfg: dict) -> list[tuple[str, str, str]]:
    """(label, dotted metrics key, formatted value) for the summary table."""
    rows = [("n × d × m", "sizes", f"{m['sizes']['n']} × {m['sizes']['d']} × {m['sizes']['m']}")] if "sizes" in m else []
    model = cfg.get("model", {})
    if model:
        rows.append(
            ("network", "config.model", f"{model.get('activation')}, {model.get('scaling')}, {_get(cfg, 'loss.kind')} loss")
        )
    for label, key in (
        ("synthetic targets (no y in the file)", "data.synthetic_targets"),
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
    facts["batch"] = bool("batch_G" in cols and np.isfinite(cols["batch_G"]).any())
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
DEFAULT_METRICS = "norms.S2/norms.S1, rank.outliers"
ROUNDING = 1e4  # a term norm below ROUNDING · eps · ‖G‖ is zero in exact arithmetic (rounding level)
LABELS = {
    "norms.reg": "‖λ∇R‖",
    "norms.bulk": "‖E + λ∇R‖",
    "rank.outliers": "outliers",
    "best_test_error": "test error (best η of the point)",
    "rank.stable": "stable rank",
    "rank.effective": "effective rank",
    "energy.predicted_subspace": "energy in span(X_Bᵀr, q)",
}


def metric_label(name: str) -> str:
    """'norms.S1/norms.E' -> '‖S1‖ / ‖E‖'."""

    def one(col):
        if col in LABELS:
            return LABELS[col]
        if col.startswith("eta.") and col.count(".") >= 2:  # a one-step column: eta.<eta>.<quantity>
            eta, _, what = col[4:].rpartition(".")
            return f"{what.replace('_', ' ')} (η={eta})"
        return f"‖{col[6:]}‖" if col.startswith("norms.") else col

    return " / ".join(one(c) for c in name.split("/"))


def parse_metrics(text: str | None, columns: list[str] | None = None, what: str = "option --metrics") -> list[str]:
    """'norms.S1/norms.E, rank.outliers' -> the sweep report's metrics: results.csv columns or ratios a/b."""
    items = [i.replace(" ", "") for i in (text or DEFAULT_METRICS).split(",") if i.strip()]
    if not items:
        raise InputError(f"{what}: give at least one metric (a results.csv column or a ratio a/b)")
    for item in items:
        parts = item.split("/")
        if len(parts) > 2 or not all(parts):
            raise InputError(f"{what}: {item!r} is neither a column nor a ratio a/b")
        bad = [c for c in parts if columns is not None and c not in columns]
        if bad:
            raise InputError(f"{what}: {bad[0]!r} is not a column of results.csv (e.g. norms.S1, norms.E, rank.outliers)")
    return items


def rounding_floor(base: dict) -> float:
    """ROUNDING · eps of the run's dtype: a term norm at most this times ‖G‖ is zero in exact arithmetic."""
    dtype = _get(base, "compute.dtype", "float64")
    return ROUNDING * float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)


def metric_value(row: dict, metric: str, floor: float) -> float:
    """A metric of one run; term norms at rounding level (≤ floor·‖G‖) count as 0, and a ratio
    over such a zero is undefined (NaN): never a huge number stretching a scale."""
    G = _num(row.get("norms.G"))

    def val(col):
        v = _num(row.get(col))
        if col == "norms.bulk" and not np.isfinite(v):  # no penalty: the bulk is E
            v = _num(row.get("norms.E"))
        return 0.0 if col.startswith("norms.") and np.isfinite(G) and abs(v) <= floor * G else v

    parts = metric.split("/")
    if len(parts) == 1:
        return val(parts[0])
    a, b = val(parts[0]), val(parts[1])
    return a / b if b != 0 and np.isfinite(b) else math.nan


class Dim:
    """One axis of the sweep's figures: a swept key (levels = its values), or zipped keys moving
    together (each zipped setting is one labelled level)."""

    def __init__(self, keys: list[str], levels: list[tuple]):
        self.keys, self.levels = keys, levels
        if len(keys) == 1:
            self.name = keys[0]
            self.labels = [_fmt(v[0]) for v in levels]
        else:
            self.name = _joined_name(keys)
            self.labels = [_zip_label(keys, levels, i) for i in range(len(levels))]
        vals = [v[0] for v in levels]
        self.numeric = len(keys) == 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        self.values = [float(v) for v in vals] if self.numeric else list(range(len(levels)))

    def index(self, row: dict) -> int | None:
        for i, lv in enumerate(self.levels):
            if all(_match(row.get(k), [v]) == 0 for k, v in zip(self.keys, lv)):
                return i
        return None


def _fmt(v) -> str:
    return _g(v) if isinstance(v, float) else str(v)


def _joined_name(keys: list[str]) -> str:
    """Zipped keys as one axis name: 'regularizer.{weight_decay, input_noise}' when they share a section."""
    heads = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    if len(heads) == 1 and all("." in k for k in keys):
        return f"{heads.pop()}.{{{', '.join(k.rsplit('.', 1)[1] for k in keys)}}}"
    return " + ".join(keys)


def _zip_label(keys: list[str], levels: list[tuple], i: int) -> str:
    """A zipped level named by the keys that differ from their most common value ('baseline' when
    none does; the levels table lists every value)."""
    common = [Counter(str(lv[j]) for lv in levels).most_common(1)[0][0] for j in range(len(keys))]
    own = [f"{k.split('.')[-1]}={_fmt(v)}" for k, v, c in zip(keys, levels[i], common) if str(v) != c]
    return ", ".join(own) if own else "baseline"


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


def _dims(axes: dict[str, list], mode: str) -> list[Dim]:
    if mode == "zip" and axes:
        keys = list(axes)
        return [Dim(keys, list(dict.fromkeys(zip(*axes.values()))))]
    return [Dim([k], [(v,) for v in vals]) for k, vals in axes.items()]


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


MAX_FACETS = 12


def sweep_context(sweep_dir: Path, manifest: dict, rows: list[dict[str, str]], metrics: str | None = None) -> dict:
    """Per facet (each combination of the swept keys past the first two): a regime map and one map per
    metric over the first two keys, line plots with seed bands over the first; a per-point table.
    Nothing is averaged over a swept key: only over seeds."""
    from gradrank.report import figures

    axes = _axes(manifest, rows)
    mode = manifest.get("mode", "product")
    dims = _dims(axes, mode)
    ok = [r for r in rows if r.get("status", "done") in ("ok", "done", "")]
    failed = [r for r in rows if r.get("status") == "failed"]
    base = _base_config(manifest)
    chosen = metrics if metrics is not None else (_get(base, "output.metrics") or None)
    if chosen is None and manifest.get("command") == "onestep" and rows:  # test error per step size
        # with η swept each point runs one η: its columns eta.<η>.* are empty at every other point
        per_eta = [c for c in rows[0] if c.startswith("eta.") and c.endswith(".test_error")]
        chosen = "best_test_error" if "onestep.eta" in axes else ",".join(per_eta) or None
    names = parse_metrics(  # columns are known once a point is done (a sweep of failures has none)
        chosen, list(rows[0]) if ok else None, "option --metrics" if metrics else "config key 'output.metrics'"
    )
    floor = rounding_floor(base)
    prov = manifest.get("provenance") or {
        "versions": manifest.get("versions") or {},
        "config_hash": manifest.get("base_hash", ""),
    }
    ctx = {
        "title": _get(base, "output.name") or f"sweep {sweep_dir.name}",
        "axes": axes,
        "dims": [
            {
                "name": d.name,
                "labels": d.labels,
                "zipped": len(d.keys) > 1,
                "zkeys": d.keys,
                "levels": [[_fmt(v) for v in lv] for lv in d.levels],
            }
            for d in dims
        ],
        "n_rows": len(rows),
        "n_ok": len(ok),
        "n_pending": len(rows) - len(ok) - len(failed),
        "mode": mode,
        "failed": [{k: r.get(k, "") for k in (*axes, "seed", "error") if k in r} for r in failed],
        "seeds": manifest.get("seeds"),
        "metrics": [{"name": n, "label": metric_label(n)} for n in names],
        "nu_swept": "data.nu" in axes,
        "facets": [],
        "facets_left_out": 0,
        "config_sections": _config_sections(base),
        "provenance": prov,
        "columns": list(rows[0]) if rows else [],
        "regime_counts": Counter(r.get("regime") for r in ok if r.get("regime")).most_common(),
        "table": [],
        "table_keys": [d.name for d in dims],
        "undefined": 0,
    }
    if not dims or not ok:
        return ctx
    xdim, ydim, fdims = dims[0], (dims[1] if len(dims) > 1 else None), dims[2:]
    facet_combos = list(itertools.product(*(range(len(d.levels)) for d in fdims)))
    ctx["facets_left_out"] = max(0, len(facet_combos) - MAX_FACETS)
    index = {}
    for r in ok:
        ids = [d.index(r) for d in dims]
        if None not in ids:
            index.setdefault(tuple(ids), []).append(r)
    nY = len(ydim.levels) if ydim else 1
    for fc in facet_combos[:MAX_FACETS]:
        cells = {(j, i): index.get((i, *((j,) if ydim else ()), *fc), []) for i in range(len(xdim.levels)) for j in range(nY)}
        title = ", ".join(f"{d.name} = {d.labels[k]}" for d, k in zip(fdims, fc))
        key = "-".join(str(k) for k in fc) or "all"
        facet = {"title": title, "figures": {}, "key": key}
        draw = _drawer({"figures": facet["figures"], "warnings": ctx.setdefault("warnings", [])})
        ylabels = ydim.labels if ydim else [""]
        yname = ydim.name if ydim else None
        if any(r.get("regime") for rs in cells.values() for r in rs):
            grid = [[_mode([r.get("regime") for r in cells[(j, i)]]) for i in range(len(xdim.levels))] for j in range(nY)]
            draw("regime", "regime map", figures.regime_map, xdim.name, xdim.labels, yname, ylabels, grid, f"fig-regime-{key}")
        stats = {n: {c: _mean([metric_value(r, n, floor) for r in rs]) for c, rs in cells.items()} for n in names}
        if ydim:
            for n in names:
                M = np.array([[stats[n][(j, i)][0] for i in range(len(xdim.levels))] for j in range(nY)])
                und = np.array(
                    [
                        [bool(cells[(j, i)]) and not np.isfinite(stats[n][(j, i)][0]) for i in range(len(xdim.levels))]
                        for j in range(nY)
                    ]
                )
                draw(
                    f"map:{n}",
                    f"{metric_label(n)} map",
                    figures.metric_map,
                    xdim.name,
                    xdim.labels,
                    yname,
                    ylabels,
                    M,
                    und,
                    metric_label(n) + " (mean over seeds)",
                    f"fig-map-{names.index(n)}-{key}",
                )
        series = {
            metric_label(n): [
                (
                    ylabels[j] if ydim else metric_label(n),
                    np.array([stats[n][(j, i)][0] for i in range(len(xdim.levels))]),
                    np.array([stats[n][(j, i)][1] for i in range(len(xdim.levels))]),
                )
                for j in range(nY)
            ]
            for n in names
        }
        # a panel with no defined value is left out; a series undefined everywhere is named in its panel
        series = {t: lines for t, lines in series.items() if any(np.isfinite(ln[1]).any() for ln in lines)}
        if series:
            draw(
                "lines",
                "line plots",
                figures.seed_bands,
                xdim.name,
                xdim.values if xdim.numeric else xdim.labels,
                series,
                yname,
                f"fig-lines-{key}",
            )
        ctx["facets"].append(facet)
    for ids, rs in sorted(index.items()):
        vals = {n: _mean([metric_value(r, n, floor) for r in rs]) for n in names}
        ctx["undefined"] += sum(1 for n in names for r in rs if not np.isfinite(metric_value(r, n, floor)))
        ctx["table"].append(
            {
                "levels": [d.labels[i] for d, i in zip(dims, ids)],
                "runs": len(rs),
                "regime": _mode([r.get("regime") for r in rs]) or "–",
                "metrics": [
                    ("undefined" if not np.isfinite(v[0]) else _g(v[0]))
                    + ("" if not np.isfinite(v[1]) or len(rs) < 2 else f" ± {_g(v[1], 2)}")
                    for v in vals.values()
                ],
            }
        )
    return ctx


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


def regpath_context(doc: dict, rows: list[dict[str, str]]) -> dict:
    """The regularisation path report: verdicts, the path figure, per-strength means over seeds."""
    from gradrank.report import figures

    cfg = doc.get("config") or {}
    ctx = {
        "title": _get(cfg, "output.name") or f"regularisation path {doc.get('config_hash', '')}",
        "doc": doc,
        "summary": doc.get("summary") or {},
        "steps": doc.get("steps", 0),
        "seeds": doc.get("seeds") or [],
        "figures": {},
        "warnings": [],
        "table": [],
        "config_sections": _config_sections(cfg),
        "provenance": doc.get("provenance") or {},
        "config_hash": doc.get("config_hash", ""),
    }
    cols = ("S1", "S2", "E", "reg", "S1_over_S2", "G_residue_over_spike", "outliers")
    panels = {}
    for name in dict.fromkeys(r.get("regularizer", "") for r in rows):
        mine = [r for r in rows if r.get("regularizer") == name]
        xs = sorted({_num(r.get("strength")) for r in mine} - {math.nan})
        at = {x: [r for r in mine if _num(r.get("strength")) == x] for x in xs}
        lines = {}
        for key, label in (("S1_over_S2", "‖S1‖/‖S2‖"), ("G_residue_over_spike", "G along X_Bᵀr / along q")):
            v = [[_num(r.get(key)) for r in at[x]] for x in xs]
            lines[label] = tuple(np.array([f(np.array(vals)) for vals in v]) for f in (np.nanmean, np.nanmin, np.nanmax))
        panels[name] = (xs, lines)
        for x in xs:
            ctx["table"].append(
                {
                    "regularizer": name,
                    "strength": _g(x),
                    "runs": len(at[x]),
                    **{c: _g(_mean([_num(r.get(c)) for r in at[x]])[0]) for c in cols},
                    "regime": _mode([r.get("regime") for r in at[x]]) or "–",
                }
            )
    if panels:
        _drawer(ctx)("path", "regularisation path", figures.regpath, panels, ctx["steps"])
    return ctx


def render_scaling(payload: dict, paper: str = "a4") -> str:
    """The scaling study's HTML report (templates/scaling.html.j2) with its log–log figure."""
    from gradrank.report import figures

    title = _get(payload.get("config") or {}, "output.name", "") or f"scaling {payload.get('config_hash', '')}"
    ctx = {"figures": {}, "warnings": []}
    rows, fits = payload.get("rows") or [], payload.get("fits") or {}
    predicted = {c["quantity"]: c.get("predicted") for c in payload.get("comparison") or []}
    quantities = [q for q in ("S1", "S12", "S2", "E", "zeta", "a_mu") if rows and q in rows[0]]
    if quantities:
        _drawer(ctx)("scaling", "log-log scaling", figures.scaling, rows, fits, predicted, quantities)
    return templates_env().get_template("scaling.html.j2").render(s=payload, title=title, paper=PAPERS[paper], **ctx)
