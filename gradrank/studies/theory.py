"""Heuristic theory and its check: the predicted regime and growth exponents in n of ||S1||,
||S12||, ||S2||, ||E|| (n, d, m growing at fixed d/n, m/n; zeta = n^nu), and the scaling study
that fits log-log slopes over n with confidence intervals and puts them beside the predictions.

The derivation is written down in docs/theory.md; `predict` is pure Python (no torch), so
`gradrank theory` is instant. Notation: gamma_m ~ n^-g (g = 1/2 NTK, 1 MF); bulk pre-activation
scale s^2 = w^T Sigma_hat w ~ n^-a, a = min(alpha, 1) for unnormalised Sigma_hat; sd(sigma'_perp) ~ s^p.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradrank.config import Config, DataConfig
from gradrank.core.activations import traits
from gradrank.core.records import Record

TERMS = ("S1", "S12", "S2", "E")


@dataclass
class Prediction(Record):
    """Leading exponent per term (None: the term vanishes identically), the parts it is the max of."""

    regime: str
    exponents: dict[str, float | None]
    parts: dict[str, dict[str, float]]
    ratios: dict[str, float | None]
    valid: bool
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)


def _mean_target_nonzero(dc: DataConfig, loss: str) -> bool:
    """Whether E[y] != 0 for the configured target (then the mean residue is O(1))."""
    if dc.target == "noise":
        return False
    if dc.target == "teacher":
        return traits(dc.teacher_activation).f_mean
    link = "linear" if dc.target == "linear" else dc.link
    if loss == "logistic":  # labels sign(y): unbalanced for skewed links
        return link in ("triple", "he2", "relu")
    return link == "relu"


def predict(cfg: Config) -> Prediction:
    """Predicted exponents (docs/theory.md §2) and regime (docs/theory.md §3) for a spiked config."""
    nu, alpha = cfg.data.nu, cfg.data.alpha
    act = cfg.model.activation
    tr = traits(act)
    mu_zero, p, d2_mean, f_mean = tr.mu_zero, tr.p, tr.d2_mean, tr.f_mean
    g = 0.5 if cfg.model.scaling == "ntk" else 1.0  # gamma_m ~ n^-g
    a = min(alpha, 1.0) if cfg.data.normalize == "none" else 0.0  # s^2 ~ n^-a
    omega = 0.25 if cfg.model.planted > 0 else 0.0  # w_j^T q ~ n^(-1/2 + omega)
    kappa = nu - 0.5 + omega  # the spike's part of the pre-activations ~ n^kappa
    ve = None if p is None else -a * p / 2  # sd(sigma'_perp) ~ n^ve
    notes = []
    # mean residue r_bar ~ n^rbar: from E[y], or in NTK from f_bar = gamma (sum_j a_j) E sigma ~ gamma sqrt(m)
    rbar = []
    if _mean_target_nonzero(cfg.data, cfg.loss.kind):
        rbar.append(0.0)
    if f_mean and cfg.model.outer == "rademacher":
        rbar.append(0.5 - g)
    rbar = max(rbar) if rbar else None

    parts: dict[str, dict[str, float]] = {t: {} for t in TERMS}
    if not mu_zero:
        parts["S1"]["X_B^T r ~ n^(1-a/2), |a o mu| ~ sqrt(m)"] = 0.5 - g - a / 2  # (gamma/n)|X_B^T r||a o mu|
        parts["S12"]["random z^T r ~ sqrt(n)"] = nu - g
        parts["S12"]["z^T r through f's linear part in the spike"] = 2 * nu + omega + 0.5 - 2 * g
        if cfg.data.index_sees_spike:
            parts["S12"]["z^T r through the target (index sees the spike)"] = nu + 0.5 - g
    if ve is not None:
        parts["S2"]["random sigma'_perp^T (z o r) ~ sqrt(nm) sd(sigma'_perp)"] = nu - g + ve
        if d2_mean and rbar is not None:
            parts["S2"]["coherent: r_bar E[sigma''] times the spike in the pre-activations"] = 2 * nu + omega - g + rbar
        parts["E"]["||X_B|| ||(r a^T) o Sigma'_perp|| / n, up to log factors from max |r_i|"] = -g + ve
    parts = {t: {k: round(e, 12) for k, e in v.items()} for t, v in parts.items()}
    exps = {t: (max(parts[t].values()) if parts[t] else None) for t in TERMS}

    valid = kappa < 0 and kappa < -a / 2
    if not valid:
        notes.append(
            f"the spike's part of the pre-activations grows (n^{kappa:+.3g}) or exceeds the bulk's "
            f"(n^{-a / 2:+.3g}): the expansions behind these exponents fail, treat them as first-order guesses"
        )
    if alpha >= 1 and cfg.data.normalize == "none":
        notes.append("alpha >= 1: tr Sigma_hat stops growing; exponents use a = 1 and ignore log factors")
    if cfg.model.planted > 0:
        notes.append("planted W: w_j^T q ~ n^-1/4, so the spike reaches the pre-activations at nu = 1/4, not 1/2")
    if mu_zero:
        notes.append(f"{act}: E sigma'(s g) = 0, so mu = 0 and S1 = S12 = 0 exactly")
    if p is None:
        notes.append(f"{act}: sigma' is constant, so Sigma'_perp = 0: S2 = E = 0 and G = S1 + S12 has rank one")

    def ratio(x, y):
        return None if exps[x] is None or exps[y] is None else exps[x] - exps[y]

    residue = max((e for e in (exps["S1"], exps["S12"]) if e is not None), default=None)
    ratios = {"S2/S1": ratio("S2", "S1"), "S1/E": ratio("S1", "E"), "S2/E": ratio("S2", "E")}
    if mu_zero:
        regime = "spike-dominated" if nu >= 0.25 else "no-structure"
    elif p is None:
        regime = "spike-dominated" if exps["S12"] > exps["S1"] else "residue-dominated"
    elif nu < 0.25:
        regime = "residue-dominated"
    elif nu < 0.5:
        regime = "rank-two"
    else:
        regime = "spike-dominated"
    inputs = {
        "nu": nu,
        "alpha": alpha,
        "activation": act,
        "scaling": cfg.model.scaling,
        "loss": cfg.loss.kind,
        "planted": cfg.model.planted,
        "g": g,
        "a": a,
        "p": p,
        "kappa": kappa,
        "mean_residue_exponent": rbar,
        "residue_exponent": residue,
    }
    return Prediction(regime, exps, parts, ratios, valid, notes, inputs)


# ---------------------------------------------------------------------------- scaling study

QUANTITIES = ("S1", "S12", "S2", "E", "G", "zeta", "a_mu")
