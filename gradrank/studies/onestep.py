"""The one-step protocol (Ba et al. 2022, "High-dimensional asymptotics of feature learning: how one
gradient step improves the representation"; docs/onestep.md, "What one point computes").

For each seed and step size eta:

1. W1 = W0 - eta * mult * G (torch.optim.SGD through gradrank.studies.loop), G = grad_{W^T} of the objective at W0 (loss gradient, Prop. 2.1, plus
   the dense regularisers' gradients; input noise draws data the gradient is taken at), a fixed.
   `mult` is training's step-size convention (`training.lr_multiplier`, train.lr_scale): m for
   mean-field scaling (gamma_m = c/m) under lr_scale = auto, 1 for NTK. onestep.steps > 1 repeats
   the full-batch step from the current W (input-noise draw t at step t). eta = 0 leaves W0 as it is:
   random features, exactly.
2. A ridge readout on the features phi(x) = sigma(W1 x) / sqrt(m) (no bias, as the network has none):
   a = argmin (1/n) ||Phi a - y||^2 + lambda ||a||^2, solved through the n x n system
   a = Phi^T (Phi Phi^T + n lambda I)^{-1} y when n <= m, else the m x m one (`ridge`). Its n rows
   are, by default (onestep.readout = fresh), n fresh samples of the same model (streams
   "onestep_readout", "onestep_readout_noise"), as in Ba et al.'s protocol: with the step's own rows
   (readout = same) the update, which carries the training labels' noise through X_B^T r, lets the
   readout overfit them. lambda is onestep.ridge (ridge_select = fixed) or the candidate of
   onestep.ridge_grid with the smallest error on a held-out fraction onestep.holdout of the readout
   rows (stream "onestep_holdout"), refitted on every readout row.
3. test_error = mean squared error of the readout on the test set (data.n_test, n when 0), whatever
   the loss the step used (the readout is least squares).
4. Alignments of the update W1 - W0: |cos| of its top two right singular vectors (in R^d) with q and
   with the residue direction X_B^T r (r at W0, the S1 left vector of the first step), and the norm
   of their projection onto the span of the target's index directions (align_target, spiked data
   only). At eta = 0 there is no update and the alignments are NaN.

Over all points the correlation of test error with each alignment (Pearson, bootstrap CI from the
stream "onestep_bootstrap", Spearman) is reported: within one seed and one step the update has the
same direction for every eta > 0, so that correlation mixes the eta effect with the direction's.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from gradrank.config import Config, OnestepConfig
from gradrank.core.fits import Correlation, bootstrap_correlation
from gradrank.core.measures import abs_cos
from gradrank.core.onestep_records import EtaSummary, OnestepPoint, OnestepResult
from gradrank.core.spectra import dense_spectrum
from gradrank.data.spiked import fresh
from gradrank.errors import InputError
from gradrank.models.twolayer import Network, TwoLayer
from gradrank.rng import generator
from gradrank.studies import analyze as analysis
from gradrank.studies import loop
from gradrank.studies import train as training

ALIGNMENTS = ("align_target", "align_spike", "align_residue")


def resolve(cfg: Config) -> Config:
    """The protocol needs a test set: data.n_test = 0 becomes n for spiked data (recorded). A fresh
    readout sample exists only for the spiked model."""
    etas = cfg.onestep.eta
    if len(set(etas)) != len(etas):
        raise InputError(f"config key 'onestep.eta' repeats a step size: {etas}")
    if cfg.onestep.readout == "fresh" and cfg.data.source != "spiked":
        raise InputError("config key 'onestep.readout' = fresh needs spiked data (a fresh sample); use same for given data")
    if cfg.data.source == "spiked" and cfg.data.n_test == 0:
        cfg = cfg.replace(**{"data.n_test": cfg.data.n})
    return cfg


def configure(cfg: Config, etas=None, steps: int | None = None, ridge: float | None = None) -> Config:
    """cfg with the command line's --eta/--steps/--ridge (a given ridge means ridge_select = fixed),
    validated by the config's own rules, then resolved."""
    sets: dict = {}
    if etas is not None:
        sets["onestep.eta"] = [float(e) for e in etas]
    if steps is not None:
        sets["onestep.steps"] = steps
    if ridge is not None:
        sets |= {"onestep.ridge": ridge, "onestep.ridge_select": "fixed"}
    return resolve(cfg.replace(**sets) if sets else cfg)


def parse_etas(text: str) -> list[float]:
    """`--eta 0,1,4,16`: comma-separated numbers (checked >= 0 by the config)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise InputError(f"option --eta: give comma-separated step sizes, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"option --eta: step sizes must be numbers, got {text!r}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise InputError(f"option --eta: step sizes must be finite and >= 0, got {text!r}")
    return values


# ---------------------------------------------------------------------------- the readout


def ridge(Phi, y, lams):
    """Ridge coefficients a (m x L), one column per lambda in lams, of
    min (1/n) ||Phi a - y||^2 + lambda ||a||^2, through the smaller of the n x n and m x m systems:
    a = Phi^T (Phi Phi^T + n lambda I)^-1 y when n <= m, else (Phi^T Phi + n lambda I)^-1 Phi^T y.
    One lambda: a Cholesky solve; several (or a kernel Cholesky refuses, e.g. from huge features):
    one eigendecomposition serves them all."""

    n, m = Phi.shape
    wide = n <= m
    K, b = (Phi @ Phi.T, y) if wide else (Phi.T @ Phi, Phi.T @ y)
    x = None
    if len(lams) == 1:
        eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        L, info = torch.linalg.cholesky_ex(K + n * float(lams[0]) * eye)
        x = torch.cholesky_solve(b[:, None], L) if not int(info) else None
    if x is None:
        lam = torch.as_tensor(lams, dtype=Phi.dtype, device=Phi.device)
        e, Q = torch.linalg.eigh(K)
        x = Q @ ((Q.T @ b)[:, None] / (e[:, None].clamp_min(0) + n * lam))
    return Phi.T @ x if wide else x


def features(net, X):
    """phi(x) = sigma(W x) / sqrt(m) for every row of X."""
    return net.act.f(net.preactivations(X)) / math.sqrt(net.m)


def readout(oc: OnestepConfig, net, X, y, X_test, y_test, holdout_idx) -> tuple[float, float, float]:
    """(test error, train error, lambda) of the ridge readout fitted on net's features of (X, y)."""

    Phi = features(net, X)
    if oc.ridge_select == "fixed":
        lam = oc.ridge
    else:
        val = torch.zeros(X.shape[0], dtype=torch.bool, device=Phi.device)
        val[holdout_idx] = True
        A = ridge(Phi[~val], y[~val], oc.ridge_grid)
        err = ((Phi[val] @ A - y[val, None]) ** 2).mean(0)
        err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
        lam = oc.ridge_grid[int(torch.argmin(err))]
    a = ridge(Phi, y, [lam])[:, 0]
    test = float(((features(net, X_test) @ a - y_test) ** 2).mean())
    train = float(((Phi @ a - y) ** 2).mean())
    return test, train, float(lam)


# ---------------------------------------------------------------------------- the step


def step(cfg: Config, ds, net0, eta: float, mult: float, G0=None):
    """W after onestep.steps full-batch gradient steps of size eta * mult from net0 (G0: the gradient at
    W0, if known), taken by gradrank.studies.loop (torch.optim.SGD) on the module TwoLayer from the
    closed-form gradient; the network at W, and whether a step left the dtype's range (then W is the last finite)."""
    if eta == 0.0:
        return net0, False
    model = TwoLayer.of(net0)
    net = model.network()  # views of the module's weights, which the optimiser updates in place
    last = [net.W.clone()]  # the last finite W

    def gradient_step(t: int, backward: bool) -> float:
        if not bool(net.W.isfinite().all()):
            raise loop.Diverged(f"step {t}: W is not finite")
        last[0] = net.W.clone()
        if not backward:
            return 0.0
        try:
            G = G0 if t == 0 and G0 is not None else training.full_gradient(cfg, ds, net, t)[3]
        except InputError:  # the gradient overflowed at a later step: a divergent step size
            if t == 0:
                raise
            raise loop.Diverged(f"step {t}: the gradient overflows") from None
        model.W.grad = G.T  # m x d
        return 0.0  # the protocol follows W (checked finite above), not the loss

    run = loop.run(loop.optimizer("gd", [model.W], eta * mult), gradient_step, cfg.onestep.steps)
    return Network(last[0], net.a, net.gamma, net.act), run.diverged


def alignments(U, B, q, residue_dir) -> dict[str, float]:
    """|cos| of the columns u_1, u_2 of U with q and X_B^T r, and ||P_B u_k|| (B: index directions)."""

    out = {}
    for k, suffix in ((0, ""), (1, "_2")):
        if U is None or U.shape[1] <= k:
            out |= {f"{a}{suffix}": math.nan for a in ALIGNMENTS}
            continue
        u = U[:, k : k + 1]
        out[f"align_spike{suffix}"] = abs_cos(u, q)[0]
        out[f"align_residue{suffix}"] = abs_cos(u, residue_dir)[0]
        out[f"align_target{suffix}"] = math.nan if B is None else float((B @ u).norm() / u.norm().clamp_min(1e-300))
    return out


# ---------------------------------------------------------------------------- the study


def run_seed(cfg: Config, on_point: Callable[[OnestepPoint], None] | None = None) -> tuple[list[OnestepPoint], float, dict]:
    """Every eta of cfg.onestep at cfg's seed: (points, mult, timings)."""

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    cfg, ds, net0 = analysis.prepare(cfg)
    if ds.X_test is None or ds.y_test is None:
        raise InputError(
            "the one-step protocol needs a test set: set data.n_test (spiked or built-in data) or give X_test and y_test in the file"
        )
    oc = cfg.onestep
    mult = training.lr_multiplier(cfg, net0.m)
    step_ds, grad0, _, G0 = training.full_gradient(cfg, ds, net0, 0)
    residue_dir = step_ds.X_B.T @ grad0.r  # the S1 left vector (docs/model.md §3), at W0
    B = None
    if cfg.data.source == "spiked" and ds.index_directions is not None:
        B = torch.linalg.qr(ds.index_directions.T)[0].T.to(ds.X)  # orthonormal rows spanning the indices
    X_r, y_r = ds.X, ds.y
    if oc.readout == "fresh":
        X_r, y_r = (
            t.to(ds.X)
            for t in fresh(
                cfg.data, cfg.seed, cfg.loss.kind, ds.to("cpu", torch.float64), ds.n, "onestep_readout", "onestep_readout_noise"
            )
        )
    n_val = min(ds.n - 1, max(1, round(oc.holdout * ds.n)))
    holdout_idx = torch.randperm(ds.n, generator=generator(cfg.seed, "onestep_holdout"))[:n_val].to(ds.X.device)
    lap("setup")
    U_first = None  # one step: W1 - W0 = -eta mult G0^T has G0's singular vectors for every eta > 0
    points = []
    for eta in oc.eta:
        net, diverged = step(cfg, ds, net0, eta, mult, G0)
        lap("step")
        test, train, lam = (math.nan,) * 3 if diverged else readout(oc, net, X_r, y_r, ds.X_test, ds.y_test, holdout_idx)
        lap("readout")
        dW = net.W - net0.W
        if eta == 0.0 or not float(dW.norm()) > 0:  # no update (or a first step already out of range)
            U, s = None, [0.0, 0.0]
        elif oc.steps == 1 and not diverged:
            if U_first is None:
                spec = dense_spectrum(G0, 2)
                U_first, s_first = spec.U, spec.s
            U, s = U_first, [eta * mult * float(v) for v in s_first]
        else:  # scaled first: the Gram of a huge update would overflow, its directions do not change
            top = float(dW.abs().max())
            spec = dense_spectrum(dW.T / top, 2)
            U, s = spec.U, [top * float(v) for v in spec.s]
        s = [*s, 0.0, 0.0][:2]
        point = OnestepPoint(
            eta=float(eta),
            seed=cfg.seed,
            test_error=test,
            train_error=train,
            ridge=lam,
            **alignments(U, B, ds.q, residue_dir),
            update_s1=s[0],
            update_s2=s[1],
            update_fro=float(dW.norm()),
            diverged=diverged,
        )
        lap("alignment")
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points, mult, timings


def study(cfg: Config, seeds: list[int] | None = None, on_point: Callable[[OnestepPoint], None] | None = None) -> OnestepResult:
    """The protocol at every eta of cfg.onestep for each seed (default: cfg.seed alone), summarised."""
    cfg = resolve(cfg)
    seeds = [cfg.seed] if seeds is None else list(seeds)
    if not seeds:
        raise InputError("--seeds must be at least 1")
    points, timings, mult = [], {}, 1.0
    for s in seeds:
        pts, mult, t = run_seed(cfg.replace(seed=s), on_point)
        points += pts
        timings = {k: timings.get(k, 0.0) + v for k, v in t.items()}
    return OnestepResult(
        cfg,
        list(cfg.onestep.eta),
        seeds,
        cfg.onestep.steps,
        mult,
        points,
        summarize(points),
        correlations(points, cfg.seed),
        timings,
    )


def _mean_sd(values) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if not v.size:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarize(points: list[OnestepPoint]) -> list[EtaSummary]:
    etas = list(dict.fromkeys(p.eta for p in points))
    rf = _mean_sd(p.test_error for p in points if p.eta == 0.0)[0]
    out = []
    for eta in etas:
        mine = [p for p in points if p.eta == eta]
        te = _mean_sd(p.test_error for p in mine)
        al = {a: _mean_sd(getattr(p, a) for p in mine) for a in ALIGNMENTS}
        out.append(
            EtaSummary(
                eta,
                len(mine),
                te[0],
                te[1],
                1 - te[0] / rf if math.isfinite(rf) and rf > 0 else math.nan,
                *(v for a in ALIGNMENTS for v in al[a]),
            )
        )
    return out


def correlations(points: list[OnestepPoint], seed: int) -> dict[str, Correlation]:
    """Test error against each alignment over every point with an update (eta > 0)."""

    moved = [p for p in points if p.eta > 0]
    return {
        a: bootstrap_correlation(
            [getattr(p, a) for p in moved], [p.test_error for p in moved], generator(seed, "onestep_bootstrap", i)
        )
        for i, a in enumerate(ALIGNMENTS)
    }
