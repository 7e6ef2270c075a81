"""The report of an analysis, decomposition or training run (metrics.json, arrays.npz, and for a
training run trajectory.csv): the headline, key numbers, spectrum, term norms, alignment and data
figures, the config and provenance."""

from __future__ import annotations

from pathlib import Path

import jinja2

from gradrank import io
from gradrank.errors import InputError
from gradrank.report import figures, train
from gradrank.report.common import (
    PAPERS,
    config_sections,
    drawer,
    g,
    get,
    rounding_floor,
    subscript,
    templates_env,
    write_report,
)
from gradrank.results.files import read_arrays, read_json
from gradrank.results.runs import metrics_from_dict


def render_dir(run_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, **_) -> list[Path]:
    """An analyze/decompose/train run directory (metrics.json, arrays.npz, trajectory.csv)."""
    metrics = read_metrics(run_dir / "metrics.json")
    try:
        cfg = metrics.get("config") or {}
        paper = paper or (cfg.get("output") or {}).get("paper", "a4")
        html = templates_env().get_template("run.html.j2").render(**run_context(run_dir, metrics), paper=PAPERS[paper])
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, jinja2.TemplateError) as exc:
        if io.owned(run_dir):  # gradrank's own, unchanged files: a bug in the report
            raise
        raise InputError(
            f"{run_dir / 'metrics.json'}: a value is not what gradrank writes (the run directory was edited: "
            f"{exc.__class__.__name__})"
        ) from None
    return write_report(html, formats, Path(out_dir or run_dir), paper)


def read_metrics(path: Path) -> dict:
    """metrics.json read through its typed record (a foreign or malformed file is exit 2 naming the
    file and field), as the dict the templates read: the record's keys, config and provenance."""
    doc = read_json(path, "run directory")
    record = metrics_from_dict(doc, str(path))
    for key in ("config", "provenance"):
        if not isinstance(doc.get(key, {}), dict):
            raise InputError(f"{path}: field '{key}' must be an object")
    return {**record.to_dict(), "config": doc.get("config") or {}, "provenance": doc.get("provenance") or {}}


def headline(m: dict) -> str:
    """One sentence from one rule: the regime, then each outlier (only values above the bulk edge)
    with the label the outlier rule gave it (metrics.outlier_labels: residue, spike or mixed) and
    the |cos| that earned it, then the largest term (the one s_1 comes from) beside the others."""
    out = m["rank"]["outliers"]
    nr, al, s = m["norms"], m["alignment"], m["singular_values"]
    labels = list(m.get("outlier_labels") or [])
    parts = []
    for i, lab in enumerate(labels[: min(out, 2)]):
        u, sv = f"u{subscript(i + 1)}", f"s{subscript(i + 1)} = {g(s[i])}" if i < len(s) else ""
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
    others = ", ".join(f"‖{k}‖ = {g(nr[k])}" for k in terms if k != top)
    outliers = f"{out} outlier{'' if out == 1 else 's'} above the bulk edge {g(m['bulk_edge'])}"
    return (
        f"{m['regime']}: {outliers}{': ' + '; '.join(parts) if parts else ''}. "
        f"Largest term: the {names[top]} ‖{top}‖ = {g(nr[top])} ({others}); stable rank {g(m['rank']['stable'])}."
    )


def _cos(al: dict, key: str, i: int) -> str:
    v = al.get(key) or []
    return f"{v[i]:.2f}" if i < len(v) else "–"


def run_context(run_dir: Path, metrics: dict) -> dict:
    """Everything the run template shows: headline, key numbers, figures, config and provenance."""
    arrays = read_arrays(run_dir / "arrays.npz")
    cfg = metrics.get("config") or {}
    m = metrics
    has_analysis = all(k in m for k in ("norms", "rank", "alignment", "regime", "bulk_edge", "singular_values"))
    ctx = {
        "title": get(cfg, "output.name") or f"{'training run' if m.get('kind') == 'train' else 'run'} {m.get('config_hash', '')}",
        "kind": m.get("kind", "analyze"),
        "m": m,
        "headline": headline(m) if has_analysis else None,
        "warnings": (get(m, "trust.warnings", []) or [])
        + (get(m, "trust.notes", []) or [])
        + ([m.get("message") or "training diverged"] if m.get("diverged") else []),
        "config_sections": config_sections(cfg),
        "provenance": m.get("provenance") or {},
        "config_hash": m.get("config_hash", ""),
        "figures": {},
        "key_numbers": [],
        "spikes": None,
        "alpha": None,
        "alpha_source": None,
        "training": None,
    }
    draw = drawer(ctx)
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
        alpha = get(m, "data.alpha_fit")
        ctx["alpha_source"] = "fitted" if alpha is not None else "configured"
        alpha = alpha if alpha is not None else get(cfg, "data.alpha")
        ctx["alpha"] = alpha
        draw(
            "data",
            "bulk spectrum",
            figures.data_diagnostics,
            arrays["bulk_eigenvalues"],
            alpha,
            get(m, "data.zeta"),
            get(m, "sizes.n"),
            get(m, "data.alpha_fit_r2") if ctx["alpha_source"] == "fitted" else None,
        )
    train.add_training(ctx, run_dir, draw)
    return ctx


def _key_numbers(m: dict, cfg: dict) -> list[tuple[str, str, str]]:
    """(label, dotted metrics key, formatted value) for the summary table."""
    rows = [("n × d × m", "sizes", f"{m['sizes']['n']} × {m['sizes']['d']} × {m['sizes']['m']}")] if "sizes" in m else []
    model = cfg.get("model", {})
    if model:
        rows.append(
            ("network", "config.model", f"{model.get('activation')}, {model.get('scaling')}, {get(cfg, 'loss.kind')} loss")
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
        v = get(m, key)
        if v is not None:
            rows.append((label, key, g(v)))
    return rows


def _spike_facts(m: dict) -> dict:
    s = m["singular_values"]
    nr = m["norms"]
    return {
        "s": [g(v) for v in s[: max(2, m["rank"]["outliers"])]],
        "ratio": g(nr["S2"] / nr["S1"]) if nr["S1"] > 0 else "∞",
        "labels": m.get("outlier_labels", []),
    }
