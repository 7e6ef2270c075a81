"""The one log-log fit: slope of log y against log n with a t-based confidence interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradrank.measures.records import Record


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


def fit_loglog(n, values, level: float = 0.95) -> Fit | None:
    """Fit log(values) = c + slope log(n); None when fewer than 3 positive points or one n."""
    import numpy as np
    from scipy import stats

    n, v = np.asarray(n, dtype=float), np.asarray(values, dtype=float)
    keep = (v > 0) & np.isfinite(v)
    x, y = np.log(n[keep]), np.log(v[keep])
    if x.size < 3 or np.ptp(x) == 0:
        return None
    A = np.stack([np.ones_like(x), x], 1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = x.size - 2
    sxx = float(((x - x.mean()) ** 2).sum())
    se = math.sqrt(float(resid @ resid) / dof / sxx)
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    sst = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(resid @ resid) / sst if sst > 0 else 1.0
    return Fit(float(coef[1]), float(coef[0]), se, float(coef[1]) - t * se, float(coef[1]) + t * se, r2, int(x.size), level)
