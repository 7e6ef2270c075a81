"""The one log-log fit (slope of log y against log n, with a t-based confidence interval for the
scaling study, without it for a spectrum's power-law exponent) and the one correlation with a
bootstrap confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from gradrank.core.records import Record


@dataclass
class Fit(Record):
    """Least squares log y = c + slope log n over every (n, seed) point, t-based CI."""

    slope: float
    intercept: float
    se: float
    ci_low: float
    ci_high: float
    r2: float
    points: int
    level: float


def _line(n, values):
    """Least squares log(values) = c + slope log(n) over the positive finite points: (x, resid, coef,
    R^2), None when fewer than 3 such points or a single n."""

    n, v = np.asarray(n, dtype=float), np.asarray(values, dtype=float)
    keep = (v > 0) & np.isfinite(v)
    x, y = np.log(n[keep]), np.log(v[keep])
    if x.size < 3 or np.ptp(x) == 0:
        return None
    A = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / sst if sst > 0 else 1.0
    return x, resid, coef, r2


def loglog_slope(n, values) -> tuple[float, float] | None:
    """(slope, R^2) of the same fit without its confidence interval, so without importing scipy.stats
    (1.5 s): the data path's power-law exponent of a spectrum. None as for fit_loglog."""
    line = _line(n, values)
    return None if line is None else (float(line[2][1]), line[3])


def fit_loglog(n, values, level: float = 0.95) -> Fit | None:
    """Fit log(values) = c + slope log(n); None when fewer than 3 positive points or one n."""

    line = _line(n, values)
    if line is None:
        return None
    x, resid, coef, r2 = line
    dof = x.size - 2
    sxx = float(((x - x.mean()) ** 2).sum())
    se = math.sqrt(float(resid @ resid) / dof / sxx)
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    return Fit(float(coef[1]), float(coef[0]), se, float(coef[1]) - t * se, float(coef[1]) + t * se, r2, int(x.size), level)


@dataclass
class Correlation(Record):
    """Pearson r of two samples with a percentile bootstrap CI, and Spearman's rho."""

    pearson: float
    ci_low: float
    ci_high: float
    spearman: float
    points: int
    level: float
    resamples: int


def bootstrap_correlation(x, y, generator, resamples: int = 2000, level: float = 0.95) -> Correlation:
    """Pearson r over the finite pairs (x_i, y_i), its CI from `resamples` resamples of the pairs with
    replacement (torch `generator`: a named stream), and Spearman's rho; NaN with fewer than 3 pairs."""

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    nan = float("nan")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(nan, nan, nan, nan, int(x.size), level, resamples)
    idx = torch.randint(0, x.size, (resamples, x.size), generator=generator).numpy()
    xs, ys = x[idx], y[idx]
    xc, yc = xs - xs.mean(1, keepdims=True), ys - ys.mean(1, keepdims=True)
    den = np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (xc * yc).sum(1) / den
    boot = boot[np.isfinite(boot)]  # a resample of one repeated point has no correlation
    lo, hi = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2]) if boot.size else (nan, nan)
    return Correlation(
        float(np.corrcoef(x, y)[0, 1]), float(lo), float(hi), float(stats.spearmanr(x, y)[0]), int(x.size), level, resamples
    )
