"""The report of a sweep (sweep.json manifest + results.csv): per facet a regime map and one map per
metric over the first two swept keys, line plots with seed bands over the first, a per-point table."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np

from gradrank.errors import InputError
from gradrank.report import figures
from gradrank.report.common import (
    PAPERS,
    config_sections,
    drawer,
    g,
    get,
    mean_sd,
    most_common,
    num,
    read_csv,
    rounding_floor,
    templates_env,
    write_report,
)
from gradrank.results.files import read_json
from gradrank.sweeps.spec import SweepManifest

METRIC_PREFIXES = ("norms.", "rank.", "regime", "status", "seed", "shares.", "energy.", "alignment", "loss", "identity", "error")


DEFAULT_METRICS = "norms.S2/norms.S1, rank.outliers"


LABELS = {
    "norms.reg": "‖λ∇R‖",
    "norms.bulk": "‖E + λ∇R‖",
    "rank.outliers": "outliers",
    "best_test_error": "test error (best η of the point)",
    "rank.stable": "stable rank",
    "rank.effective": "effective rank",
    "energy.predicted_subspace": "energy in span(X_Bᵀr, q)",
}


def render_dir(
    sweep_dir: Path, formats=("html",), out_dir: Path | None = None, paper: str | None = None, metrics: str | None = None, **_
) -> list[Path]:
    """Write the report of a sweep directory (sweep.json manifest + results.csv): phase diagrams and seed bands."""
    sweep_dir = Path(sweep_dir)
    manifest = read_json(sweep_dir / "sweep.json", "sweep directory")
    SweepManifest.from_dict(manifest, str(sweep_dir / "sweep.json"))
    rows = read_csv(sweep_dir / "results.csv")
    if rows is None:
        raise InputError(f"{sweep_dir / 'results.csv'}: missing or unreadable (not a finished sweep directory)")
    paper = paper or get(_base_config(manifest), "output.paper", "a4")
    html = (
        templates_env()
        .get_template("sweep.html.j2")
        .render(**sweep_context(sweep_dir, manifest, rows, metrics), paper=PAPERS[paper])
    )
    return write_report(html, formats, Path(out_dir or sweep_dir), paper)


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


def metric_value(row: dict, metric: str, floor: float) -> float:
    """A metric of one run; term norms at rounding level (≤ floor·‖G‖) count as 0, and a ratio
    over such a zero is undefined (NaN): never a huge number stretching a scale."""
    G = num(row.get("norms.G"))

    def val(col):
        v = num(row.get(col))
        if col == "norms.bulk" and not np.isfinite(v):  # no penalty: the bulk is E
            v = num(row.get("norms.E"))
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
    return g(v) if isinstance(v, float) else str(v)


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
                out[name] = [(num(v) if not math.isnan(num(v)) else v) for v in vals]
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
            if math.isclose(num(cell), float(v), rel_tol=1e-9, abs_tol=1e-12):
                return i
        elif str(v) == cell or (isinstance(v, bool) and str(v).lower() == str(cell).lower()):
            return i
    return None


MAX_FACETS = 12


def sweep_context(sweep_dir: Path, manifest: dict, rows: list[dict[str, str]], metrics: str | None = None) -> dict:
    """Per facet (each combination of the swept keys past the first two): a regime map and one map per
    metric over the first two keys, line plots with seed bands over the first; a per-point table.
    Nothing is averaged over a swept key: only over seeds."""
    axes = _axes(manifest, rows)
    mode = manifest.get("mode", "product")
    dims = _dims(axes, mode)
    ok = [r for r in rows if r.get("status", "done") in ("ok", "done", "")]
    failed = [r for r in rows if r.get("status") == "failed"]
    base = _base_config(manifest)
    chosen = metrics if metrics is not None else (get(base, "output.metrics") or None)
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
        "title": get(base, "output.name") or f"sweep {sweep_dir.name}",
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
        "config_sections": config_sections(base),
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
        draw = drawer({"figures": facet["figures"], "warnings": ctx.setdefault("warnings", [])})
        ylabels = ydim.labels if ydim else [""]
        yname = ydim.name if ydim else None
        if any(r.get("regime") for rs in cells.values() for r in rs):
            grid = [[most_common([r.get("regime") for r in cells[(j, i)]]) for i in range(len(xdim.levels))] for j in range(nY)]
            draw("regime", "regime map", figures.regime_map, xdim.name, xdim.labels, yname, ylabels, grid, f"fig-regime-{key}")
        stats = {n: {c: mean_sd([metric_value(r, n, floor) for r in rs]) for c, rs in cells.items()} for n in names}
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
        vals = {n: mean_sd([metric_value(r, n, floor) for r in rs]) for n in names}
        ctx["undefined"] += sum(1 for n in names for r in rs if not np.isfinite(metric_value(r, n, floor)))
        ctx["table"].append(
            {
                "levels": [d.labels[i] for d, i in zip(dims, ids)],
                "runs": len(rs),
                "regime": most_common([r.get("regime") for r in rs]) or "–",
                "metrics": [
                    ("undefined" if not np.isfinite(v[0]) else g(v[0]))
                    + ("" if not np.isfinite(v[1]) or len(rs) < 2 else f" ± {g(v[1], 2)}")
                    for v in vals.values()
                ],
            }
        )
    return ctx
