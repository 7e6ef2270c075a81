"""The scaling study: analyses over n at fixed d/n, m/n, log-log slopes with CIs beside the
predicted exponents of gradrank.studies.theory (docs/theory.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradrank.config import Config
from gradrank.core.activations import traits
from gradrank.core.fits import Fit, fit_loglog, loglog_slope
from gradrank.core.records import Record, check_kind, check_schema
from gradrank.errors import InputError
from gradrank.studies import analyze as analysis
from gradrank.studies.theory import QUANTITIES, Prediction, predict


@dataclass
class ScalingResult:
    config: Config
    ns: list[int]
    seeds: int
    rows: list[dict]
    fits: dict[str, Fit | None]
    prediction: Prediction
    comparison: list[dict]


@dataclass
class ScalingRow(Record):
    """One analysis of the study: its sizes and seed, the term norms, zeta, ||a o mu||, outliers, regime."""

    n: int
    d: int
    m: int
    seed: int
    S1: float
    S12: float
    S2: float
    E: float
    G: float
    zeta: float
    a_mu: float
    outliers: int
    regime: str


@dataclass
class Comparison(Record):
    """A quantity's predicted exponent beside its fitted slope and CI; agree: the prediction inside the CI."""

    quantity: str
    predicted: float | None
    slope: float | None
    ci_low: float | None
    ci_high: float | None
    agree: bool | None


@dataclass(kw_only=True)
class ScalingStudy(Record):
    """scaling.json: the sizes, seeds, one row per (n, seed), each quantity's fit, the prediction
    and their comparison, with the config, its hash and provenance."""

    kind: str = "scaling"
    ns: list[int]
    seeds: int
    rows: list[ScalingRow]
    fits: dict[str, Fit | None]
    prediction: Prediction
    comparison: list[Comparison]
    config: dict[str, Any]
    config_hash: str
    provenance: dict[str, Any]

    @classmethod
    def from_dict(cls, d, source: str = "scaling.json", _path: str = ""):
        if isinstance(d, dict):
            check_schema(d, source)
        return check_kind(super().from_dict(d, source, _path), "scaling", source)

    @classmethod
    def of(cls, result: "ScalingResult", provenance: dict) -> "ScalingStudy":
        cfg = result.config
        return cls(
            ns=result.ns,
            seeds=result.seeds,
            rows=[ScalingRow(**r) for r in result.rows],
            fits=result.fits,
            prediction=result.prediction,
            comparison=[Comparison(**c) for c in result.comparison],
            config=cfg.to_dict(),
            config_hash=cfg.hash(),
            provenance=provenance,
        )


def sized(cfg: Config, n: int) -> Config:
    """The config at sample size n with d/n and m/n kept at the base config's ratios."""
    d = max(1, round(n * cfg.data.d / cfg.data.n))
    m = max(1, round(n * cfg.model.width / cfg.data.n))
    return cfg.replace(**{"data.n": n, "data.d": d, "model.width": m})


def study(cfg: Config, ns: list[int], seeds: int, progress: Callable[[int, int, str], None] | None = None) -> ScalingResult:
    """Analyse every (n, seed) through the shared pipeline and fit each quantity's slope in n."""

    if cfg.data.source != "spiked":
        raise InputError("config key 'data.source' must be spiked for a scaling study (n must be free)")
    if len(set(ns)) < 2 or seeds < 1:
        raise InputError("--n needs at least two distinct sizes and --seeds at least 1")
    rows = []
    total = len(ns) * seeds
    for n in ns:
        for s in range(seeds):
            run_cfg = sized(cfg, n).replace(seed=cfg.seed + s)
            res = analysis.analyze(run_cfg)
            m = res.metrics
            row = {
                "n": n,
                "d": run_cfg.data.d,
                "m": run_cfg.model.width,
                "seed": run_cfg.seed,
                **{k: getattr(m.norms, k) for k in ("S1", "S12", "S2", "E", "G")},
                "zeta": m.data.zeta,
                "a_mu": float(np.linalg.norm(res.arrays["a"] * res.arrays["mu"])),
                "outliers": m.rank.outliers,
                "regime": m.regime,
            }
            rows.append(row)
            if progress:
                progress(len(rows), total, f"n={n} seed={run_cfg.seed}")
    fits = {q: fit_loglog([r["n"] for r in rows], [r[q] for r in rows]) for q in QUANTITIES}
    pred = predict(cfg)
    p = traits(cfg.model.activation).p
    expected = {
        **pred.exponents,
        "zeta": cfg.data.nu if cfg.data.zeta is None else 0.0,
        # ||a∘mu|| = sqrt(m)|mu| exactly where mu_j does not depend on s_j: the slope of sqrt(m) at the
        # sizes run (1/2 when m ∝ n; m is rounded to an integer at each n)
        "a_mu": (loglog_slope([r["n"] for r in rows], [math.sqrt(r["m"]) for r in rows]) or [None])[0] if p == 0 else None,
        "G": None,
    }  # G mixes terms whose constants matter at any finite n: measured only
    comparison = []
    for q in QUANTITIES:
        f, e = fits[q], expected[q]
        tol = 1e-9 * max(1.0, abs(e)) if e is not None else 0.0  # a control's CI can be rounding wide
        agree = None if f is None or e is None else bool(f.ci_low - tol <= e <= f.ci_high + tol)
        comparison.append(
            {
                "quantity": q,
                "predicted": e,
                "slope": None if f is None else f.slope,
                "ci_low": None if f is None else f.ci_low,
                "ci_high": None if f is None else f.ci_high,
                "agree": agree,
            }
        )
    return ScalingResult(cfg, list(ns), seeds, rows, fits, pred, comparison)
