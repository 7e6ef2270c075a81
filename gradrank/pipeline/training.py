"""Training with the gradient's decomposition followed over steps (docs/training.md).

Gradient descent on W (full batch by default; mini-batch SGD and Adam as options), outer
weights a fixed unless train.train_outer. Learning-rate convention (train.lr_scale = auto):
lr_effective = lr * m for mean-field scaling (gamma_m = c/m, so that each w_j moves O(1) and
features are learnt), lr for NTK; Adam normalises every coordinate and always takes lr as given.

Every train.record_every steps a row of the trajectory is recorded from the full-batch gradient
at the clean training data (noise draws are per step): losses, the term norms of the exact
decomposition, the top-k singular values and vectors of G (followed by `spectral.top_k`,
warm-started from the last record; exact SVD with train.track = exact), alignments, and the
largest principal angle between the top-k subspace now and at the previous record (degrees).
Every train.checkpoint_every steps the exact spectra of G and of W - W0 are kept.
A non-finite loss or gradient stops the run; the trajectory so far is kept and the final
analysis is taken at the last weights with a finite loss and gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from gradrank.config import Config
from gradrank.errors import InputError
from gradrank.linalg.spectral import Triplets, dense_spectrum, spectrum, top_k
from gradrank.measures.metrics import abs_cos, bulk_edge, count_outliers, stable_rank
from gradrank.measures.records import FinalLosses, TrainInfo, TrainRecord, TrainSummary
from gradrank.pipeline import analysis
from gradrank.rng import generator
from gradrank.twolayer import regularizers
from gradrank.twolayer.data import Dataset
from gradrank.twolayer.gradient import gradient, loss_and_residue
from gradrank.twolayer.mu import compute_mu, decompose
from gradrank.twolayer.network import Network


def block_size(k: int, d: int, m: int) -> int:
    """Columns of the tracked block: k + max(4, 2k) extra ones make the k-th vector converge like
    (s_p / s_k)^2 per iteration, which matters inside the clustered bulk (measured in bench_train)."""
    return min(k + max(4, 2 * k), d, m)


def columns(k: int) -> list[str]:
    """trajectory.csv's columns, in order."""
    return TrainRecord.columns(k)


@dataclass
class Trajectory:
    rows: list[TrainRecord]
    checkpoints: dict[str, np.ndarray]
    result: analysis.Analysis  # the exact analysis at the final weights
    W: torch.Tensor
    a: torch.Tensor
    diverged: bool = False
    message: str = ""
    info: TrainInfo | None = None

    def summary(self) -> TrainSummary:
        """What the run directory's metrics.json holds (besides config and provenance)."""
        last = self.rows[-1] if self.rows else None
        final = FinalLosses() if last is None else FinalLosses(last.train_loss, last.test_loss, last.objective)
        return TrainSummary(
            analysis=self.result.metrics, diverged=self.diverged, message=self.message, train=self.info, final=final
        )


def lr_effective(cfg: Config, m: int) -> float:
    tc = cfg.train
    if tc.lr_scale == "auto" and cfg.model.scaling == "mf" and tc.optimizer != "adam":
        return tc.lr * m
    return tc.lr


def resolve(cfg: Config) -> Config:
    """Training needs a test set: data.n_test = 0 becomes n // 4 for spiked data (recorded)."""
    if cfg.data.source == "spiked" and cfg.data.n_test == 0:
        cfg = cfg.replace(**{"data.n_test": max(1, cfg.data.n // 4)})
    return cfg


def _rows(ds: Dataset, idx: torch.Tensor) -> Dataset:
    """The mini-batch of a data set (rows idx), for SGD/Adam."""
    return replace(ds, X=ds.X[idx], y=ds.y[idx], X_B=ds.X_B[idx], z=ds.z[idx])


def _loss(kind: str, net: Network, X: torch.Tensor, y: torch.Tensor) -> float:
    """The mean loss of the network on (X, y)."""
    return float(loss_and_residue(kind, net.forward(X), y)[0].mean())


def _finite(*xs) -> bool:
    return all(math.isfinite(x) if isinstance(x, float) else bool(torch.isfinite(x).all()) for x in xs)


def _max_angle(U: torch.Tensor, U_prev: torch.Tensor | None) -> float:
    """Largest principal angle (degrees) between span(U) and span(U_prev), both orthonormal."""
    if U_prev is None:
        return float("nan")
    c = torch.linalg.svdvals(U_prev.T @ U).clamp(max=1.0)
    return math.degrees(float(torch.arccos(c.min())))


class _Tracker:
    """The top-k triplets of one matrix along the trajectory (warm-started, or exact)."""

    def __init__(self, k: int, p: int, d: int, exact_only: bool, tol: float, seed: int, like: torch.Tensor):
        g = generator(seed, "tracking")
        self.block = torch.randn(d, p, generator=g, dtype=torch.float64).to(like)
        self.k, self.exact_only, self.tol = k, exact_only, tol
        self.last: Triplets | None = None

    def __call__(self, matvec, rmatvec, exact) -> Triplets:
        if self.exact_only:
            spec = exact()
            out = Triplets(spec.U, spec.s, spec.V, self.k, 0.0, 0)
        else:
            out = top_k(matvec, rmatvec, self.block, self.k, tol=self.tol, exact=exact)
        self.block, self.last = out.U, out
        return out


def train(cfg: Config, on_record: Callable[[dict], None] | None = None) -> Trajectory:
    """Run the training of cfg.train, recording the trajectory (see the module docstring)."""
    cfg = resolve(cfg)
    cfg, ds, net = analysis.prepare(cfg)
    tc, acfg, kind = cfg.train, cfg.analysis, cfg.loss.kind
    n, d, m = ds.n, ds.d, net.m
    k = min(acfg.top_k, d, m)
    p = block_size(k, d, m)
    lr = lr_effective(cfg, m)
    W0 = net.W.clone()
    net = Network(net.W.clone(), net.a.clone(), net.gamma, net.act)
    track_G = _Tracker(k, p, d, tc.track == "exact", 1e-6, cfg.seed, ds.X)
    # only the norms of E and of the penalty term: singular values converge quadratically in the residual
    track_E = _Tracker(1, 2, d, tc.track == "exact", 1e-3, cfg.seed, ds.X)
    track_R = _Tracker(1, 2, d, tc.track == "exact", 1e-3, cfg.seed, ds.X)
    batches = generator(cfg.seed, "batches")
    order, cursor = torch.randperm(n, generator=batches), 0
    adam = {"m": torch.zeros_like(net.W), "v": torch.zeros_like(net.W), "t": 0}
    rows: list[TrainRecord] = []
    ckpts: dict[str, np.ndarray] = {}
    U_prev = None
    diverged, message = False, ""
    good = (net.W, net.a)
    for t in range(tc.steps + 1):
        record = t % tc.record_every == 0 or t == tc.steps
        checkpoint = t % tc.checkpoint_every == 0 or t == tc.steps
        full = tc.optimizer == "gd" or record or checkpoint
        if full:
            step_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, t)
            try:
                grad = gradient(net, step_ds.X, step_ds.y, kind)
            except InputError:  # the gradient left the dtype's range: divergence, unless at the start
                if t == 0:
                    raise
                diverged, message = True, f"diverged at step {t}: the gradient overflows {cfg.compute.dtype}; lower train.lr"
                break
            reg = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, kind)
            G = grad.dense() if reg is None else grad.dense() + reg
            penalty = regularizers.penalty_value(cfg.regularizer, net, ds.X, ds.y, kind)
            if not _finite(grad.loss, penalty, G):
                diverged, message = True, f"diverged at step {t}: the training loss or gradient is not finite; lower train.lr"
                break
            good = (net.W, net.a)  # updates rebind W and a, never write in place
        if record:
            row = _record(cfg, t, ds, step_ds, net, grad, G, reg, penalty, (track_G, track_E, track_R), U_prev, W0, k)
            U_prev = track_G.block[:, :k]
            rows.append(row)
            if on_record is not None:
                on_record(row)
        if checkpoint:
            exact = spectrum(step_ds.X, grad.D, grad.coef, p, dense_add=reg)
            ckpts[f"G_sv_step{t}"] = exact.values
            ckpts[f"G_U_step{t}"] = exact.U[:, :k]
            ckpts[f"track_s_step{t}"] = track_G.last.s[:k] if record else exact.s[:k]
            ckpts[f"track_U_step{t}"] = track_G.last.U[:, :k] if record else exact.U[:, :k]
            ckpts[f"WmW0_sv_step{t}"] = torch.linalg.svdvals(net.W - W0)
        if t == tc.steps:
            break
        if tc.optimizer == "gd":
            direction, a_grad_ds, r = G.T, step_ds, grad.r
        else:
            if cursor + tc.batch_size > n:
                order, cursor = torch.randperm(n, generator=batches), 0
            idx = order[cursor : cursor + min(tc.batch_size, n)].to(ds.X.device)
            cursor += tc.batch_size
            batch = _rows(ds, idx)
            a_grad_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, batch, t)
            try:
                g_b = gradient(net, a_grad_ds.X, a_grad_ds.y, kind)
            except InputError:  # overflow after a finite start: divergence
                diverged, message = (
                    True,
                    f"diverged at step {t}: the mini-batch gradient overflows {cfg.compute.dtype}; lower train.lr",
                )
                break
            reg_b = regularizers.penalty_gradient(cfg.regularizer, net, batch.X, batch.y, kind)
            direction = (g_b.dense() if reg_b is None else g_b.dense() + reg_b).T
            r = g_b.r
            if not _finite(g_b.loss, direction):
                diverged, message = True, f"diverged at step {t}: the mini-batch loss or gradient is not finite; lower train.lr"
                break
        if tc.train_outer:  # dL/da_j = (gamma/n) sum_i r_i sigma(w_j^T x_i)
            net.a = net.a - lr * net.gamma * (net.act.f(net.preactivations(a_grad_ds.X)).T @ r) / a_grad_ds.n
        if tc.optimizer == "adam":
            adam["t"] += 1
            adam["m"] = 0.9 * adam["m"] + 0.1 * direction
            adam["v"] = 0.999 * adam["v"] + 0.001 * direction**2
            mh, vh = adam["m"] / (1 - 0.9 ** adam["t"]), adam["v"] / (1 - 0.999 ** adam["t"])
            direction = mh / (vh.sqrt() + 1e-8)
        net.W = net.W - lr * direction
    if diverged:
        net = Network(good[0], good[1], net.gamma, net.act)
    steps_done = rows[-1].step if rows else 0
    result = analysis.analyze_state(cfg, ds, net, noise_draw=steps_done)
    info = TrainInfo(
        steps_done=steps_done,
        lr_effective=lr,
        n_test=0 if ds.X_test is None else ds.X_test.shape[0],
        records=len(rows),
        track_fallbacks=sum(r.track_fallback for r in rows),
        track_iterations_mean=float(np.mean([r.track_iterations for r in rows])) if rows else 0.0,
    )
    return Trajectory(
        rows, {k_: v.detach().cpu().double().numpy() for k_, v in ckpts.items()}, result, net.W, net.a, diverged, message, info
    )


def _record(cfg, t, ds, step_ds, net, grad, G, reg, penalty, trackers, U_prev, W0, k) -> TrainRecord:
    """One row of trajectory.csv from the full-batch gradient at step t."""
    acfg, kind = cfg.analysis, cfg.loss.kind
    track_G, track_E, track_R = trackers
    train_loss = grad.loss if step_ds is ds else _loss(kind, net, ds.X, ds.y)
    test_loss = _loss(kind, net, ds.X_test, ds.y_test) if ds.X_test is not None else float("nan")
    mu, _ = compute_mu(acfg.mu, grad, step_ds, net, acfg.quadrature)
    dec = decompose(grad, step_ds, net, mu)
    mv, rmv = grad.operator(reg)
    p = track_G.block.shape[1]
    tG = track_G(mv, rmv, lambda: spectrum(step_ds.X, grad.D, grad.coef, p, dense_add=reg))
    E_mv = lambda V: dec.coef * (step_ds.X_B.T @ (dec.D_perp @ V))  # noqa: E731
    E_rmv = lambda U: dec.coef * (dec.D_perp.T @ (step_ds.X_B @ U))  # noqa: E731
    tE = track_E(E_mv, E_rmv, lambda: spectrum(step_ds.X_B, dec.D_perp, dec.coef, 2))
    norm_E = float(tE.s[0])
    s = [float(v) for v in tG.s[:k]]
    G_fro = float(G.norm())
    res_cos, spk_cos = abs_cos(tG.U[:, :2], dec.S1.left), abs_cos(tG.U[:, :2], ds.q)
    res_cos, spk_cos = res_cos + [float("nan")] * (2 - len(res_cos)), spk_cos + [float("nan")] * (2 - len(spk_cos))
    return TrainRecord(
        step=t,
        train_loss=train_loss,
        test_loss=test_loss,
        objective=grad.loss + penalty,
        G=s[0],
        G_fro=G_fro,
        S1=dec.S1.norm(),
        S12=dec.S12.norm(),
        S2=dec.S2.norm(),
        E=norm_E,
        reg=0.0 if reg is None else float(track_R(lambda V: reg @ V, lambda U: reg.T @ U, lambda: dense_spectrum(reg, 2)).s[0]),
        s=s,
        outliers=count_outliers(s, bulk_edge(norm_E, s[0], acfg.edge_margin, tG.s.dtype, tG.residual)),
        stable_rank=stable_rank(G_fro**2, s[0]),
        align_residue_1=res_cos[0],
        align_spike_1=spk_cos[0],
        align_residue_2=res_cos[1],
        align_spike_2=spk_cos[1],
        drift_max_angle=_max_angle(tG.U[:, :k], U_prev),
        drift=float((net.W - W0).norm()),
        track_residual=tG.residual,
        track_fallback=int(tG.fallback),
        track_iterations=tG.iterations,
    )
