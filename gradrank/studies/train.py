"""Training with the gradient's decomposition followed over steps (docs/training.md).

Gradient descent on W (full batch by default; mini-batch SGD, Adam and AdamW as options, all
torch.optim's through gradrank.studies.loop), outer weights a fixed unless train.train_outer. Learning-rate convention (train.lr_scale = auto):
lr_effective = lr * m for mean-field scaling (gamma_m = c/m, so that each w_j moves O(1) and
features are learnt), lr for NTK; Adam(W) normalises every coordinate and always takes lr as given.

Every train.record_every steps a row of the trajectory is recorded from the full-batch gradient
at the clean training data (noise draws are per step): losses, the term norms of the exact
decomposition, the top-k singular values and vectors of G (followed by `gradrank.core.spectra.top_k`,
warm-started from the last record; exact SVD with train.track = exact), alignments, and the
largest principal angle between the top-k subspace now and at the previous record (degrees).
Every train.checkpoint_every steps the exact spectra of G and of W - W0 are kept.
Divergence stops the run: a non-finite loss or gradient, or a finite blow-up (a training loss
above BLOWUP · max(L0, 1), L0 the loss at step 0); the trajectory so far is kept and the final
analysis is taken at the last weights before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from gradrank.config import Config
from gradrank.config.resources import blame
from gradrank.core.measures import abs_cos, bulk_edge, count_outliers, max_principal_angle, stable_rank
from gradrank.core.records import FEATURE_COLUMNS, FEATURES, FinalLosses, TrainInfo, TrainRecord, TrainSummary
from gradrank.core.spectra import Triplets, dense_spectrum, spectrum, top_k
from gradrank.data.spiked import Dataset
from gradrank.errors import InputError
from gradrank.models import regularizers
from gradrank.models.closed_form import gradient, loss_and_residue
from gradrank.models.mu import compute_mu, decompose
from gradrank.models.twolayer import Network, TwoLayer
from gradrank.rng import generator
from gradrank.studies import analyze as analysis
from gradrank.studies import loop

BLOWUP = 1e6  # a loss this many times max(L0, 1) has diverged, even while finite


def _blown_up(loss: float, loss0: float | None) -> bool:
    return loss0 is not None and loss > BLOWUP * max(loss0, 1.0)


def _divergence(t: int, what: str, loss: float, loss0: float | None, *values) -> str:
    """Why training diverged at step t (the `what` loss or gradient not finite, or blown up), else ''."""
    if not _finite(loss, *values):
        return f"diverged at step {t}: the {what} loss or gradient is not finite; lower train.lr"
    if _blown_up(loss, loss0):
        return (
            f"diverged at step {t}: the {what} loss {loss:.3g} exceeds {BLOWUP:.0e} × max(initial loss "
            f"{loss0:.3g}, 1); lower train.lr"
        )
    return ""


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


def lr_multiplier(cfg: Config, m: int, optimizer: str = "gd") -> float:
    """The factor train.lr_scale puts on a step size: m for mean field under auto (each w_j then
    moves O(1)), 1 for NTK, for lr_scale = none, and for Adam and AdamW (which normalise every coordinate)."""
    if cfg.train.lr_scale == "auto" and cfg.model.scaling == "mf" and optimizer not in ("adam", "adamw"):
        return float(m)
    return 1.0


def lr_effective(cfg: Config, m: int) -> float:
    return cfg.train.lr * lr_multiplier(cfg, m, cfg.train.optimizer)


def full_gradient(cfg: Config, ds: Dataset, net: Network, draw: int):
    """The full-batch objective gradient at step `draw`: (noisy data, loss gradient, dense penalty
    or None, G = G_loss + penalty as a d x m matrix). Input noise takes draw number `draw`."""
    step_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, draw)
    grad = gradient(net, step_ds.X, step_ds.y, cfg.loss.kind)
    reg = regularizers.penalty_gradient(cfg.regularizer, net, ds.X, ds.y, cfg.loss.kind)
    return step_ds, grad, reg, (grad.dense() if reg is None else grad.dense() + reg)


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


def train(
    cfg: Config,
    on_record: Callable[[dict], None] | None = None,
    on_step: Callable | None = None,
    optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer] | None = None,
) -> Trajectory:
    """Run the training of cfg.train, recording the trajectory (see the module docstring).

    The steps are gradrank.studies.loop's, on the module TwoLayer: W by the optimiser train.optimizer
    names, a (train.train_outer) by plain gradient steps whatever the optimiser (docs/training.md),
    both from the closed-form gradient (Prop. 2.1 of arXiv 2510.01303, penalties included).
    on_step(t, grad, G, ds, net), if given, sees each step's update gradient before the update: the
    factored loss part `grad`, the dense G (d x m, penalty included) and the (mini-)batch `ds`.
    optimizer([W]), if given, is the torch.optim.Optimizer that trains W instead of train.optimizer's
    (which still chooses full batch, gd, or mini-batches)."""
    cfg = resolve(cfg)
    cfg, ds, net = analysis.prepare(cfg)
    tc, acfg, kind = cfg.train, cfg.analysis, cfg.loss.kind
    n, d, m = ds.n, ds.d, net.m
    k = min(acfg.top_k, d, m)
    p = block_size(k, d, m)
    lr = lr_effective(cfg, m)
    W0 = net.W.clone()
    model = TwoLayer.of(net, tc.train_outer)
    net = model.network()  # views of the module's weights, which the optimisers update in place
    opts = [loop.optimizer(tc.optimizer, [model.W], lr) if optimizer is None else optimizer([model.W])]
    if tc.train_outer:
        opts.append(loop.optimizer("gd", [model.a], lr))
    track_G = _Tracker(k, p, d, tc.track == "exact", 1e-6, cfg.seed, ds.X)
    # only the norms of E and of the penalty term: singular values converge quadratically in the residual
    track_E = _Tracker(1, 2, d, tc.track == "exact", 1e-3, cfg.seed, ds.X)
    track_R = _Tracker(1, 2, d, tc.track == "exact", 1e-3, cfg.seed, ds.X)
    track_W = _Tracker(min(FEATURES, d, m), min(FEATURES + 4, d, m), d, tc.track == "exact", 1e-4, cfg.seed, ds.X)
    B = ds.index_directions
    index_basis = None if B is None else torch.linalg.qr(B.to(ds.X).T)[0]  # orthonormal basis of the index span
    batches = generator(cfg.seed, "batches")
    rows: list[TrainRecord] = []
    ckpts: dict[str, np.ndarray] = {}
    # the loop's state: the mini-batch order, the previous record's subspace, the initial loss, the
    # weights and gradient of the last good full-batch step (kept for a divergence), the hook's arguments
    st = SimpleNamespace(order=torch.randperm(n, generator=batches), cursor=0, U_prev=None, loss0=None, last_good=None, hook=None)
    st.good = (net.W.clone(), net.a.clone())

    def add_record(net, t, step_ds, grad, G, reg, penalty, U_prev):
        row, residue = _record(cfg, t, ds, step_ds, net, grad, G, reg, penalty, (track_G, track_E, track_R), U_prev, W0, k)
        row.extra |= _features(net.W - W0, track_W, residue, ds.q, index_basis)
        rows.append(row)
        if on_record is not None:
            on_record(row)
        return track_G.block[:, :k]

    def step(t: int, backward: bool) -> float:
        """Record and checkpoint at step t, then (backward) put the update's gradient in .grad."""
        record = t % tc.record_every == 0 or t == tc.steps
        checkpoint = t % tc.checkpoint_every == 0 or t == tc.steps
        loss = math.nan
        if tc.optimizer == "gd" or record or checkpoint:
            try:
                step_ds, grad, reg, G = full_gradient(cfg, ds, net, t)
            except InputError as exc:  # the gradient left the dtype's range: divergence, unless at the start
                if t == 0:
                    raise blame(cfg, getattr(exc, "part", "G"), str(exc)) from None
                raise loop.Diverged(f"diverged at step {t}: the gradient overflows {cfg.compute.dtype}; lower train.lr") from None
            penalty = regularizers.penalty_value(cfg.regularizer, net, ds.X, ds.y, kind)
            message = _divergence(t, "training", grad.loss, st.loss0, penalty, G)
            if message:
                raise loop.Diverged(message)
            st.loss0 = grad.loss if st.loss0 is None else st.loss0
            st.good = (net.W.clone(), net.a.clone())  # the optimisers write in place
            st.last_good = (t, step_ds, grad, G, reg, penalty)
            loss = grad.loss
        if record:
            st.U_prev = add_record(net, t, step_ds, grad, G, reg, penalty, st.U_prev)
        if checkpoint:
            exact = spectrum(step_ds.X, grad.D, grad.coef, p, dense_add=reg)
            ckpts[f"G_sv_step{t}"] = exact.values
            ckpts[f"G_U_step{t}"] = exact.U[:, :k]
            ckpts[f"track_s_step{t}"] = track_G.last.s[:k] if record else exact.s[:k]
            ckpts[f"track_U_step{t}"] = track_G.last.U[:, :k] if record else exact.U[:, :k]
            ckpts[f"WmW0_sv_step{t}"] = torch.linalg.svdvals(net.W - W0)
        if not backward:
            return loss
        if tc.optimizer == "gd":
            direction, a_grad_ds, r = G.T, step_ds, grad.r
            st.hook = (grad, G, step_ds)
        else:
            if st.cursor + tc.batch_size > n:
                st.order, st.cursor = torch.randperm(n, generator=batches), 0
            idx = st.order[st.cursor : st.cursor + min(tc.batch_size, n)].to(ds.X.device)
            st.cursor += tc.batch_size
            batch = _rows(ds, idx)
            a_grad_ds = regularizers.noisy_data(cfg.regularizer, cfg.seed, batch, t)
            try:
                g_b = gradient(net, a_grad_ds.X, a_grad_ds.y, kind)
            except InputError:  # overflow after a finite start: divergence
                raise loop.Diverged(
                    f"diverged at step {t}: the mini-batch gradient overflows {cfg.compute.dtype}; lower train.lr"
                ) from None
            reg_b = regularizers.penalty_gradient(cfg.regularizer, net, batch.X, batch.y, kind)
            direction = (g_b.dense() if reg_b is None else g_b.dense() + reg_b).T
            r = g_b.r
            if record:  # the mini-batch gradient's own decomposition (the step actually taken)
                rows[-1].extra |= _batch_terms(cfg, g_b, a_grad_ds, net, direction.T)
            message = _divergence(t, "mini-batch", g_b.loss, st.loss0, direction)
            if message:
                raise loop.Diverged(message)
            st.hook = (g_b, direction.T, a_grad_ds)
            loss = g_b.loss
        model.W.grad = direction  # m x d
        if tc.train_outer:  # dL/da_j = (gamma/n) sum_i r_i sigma(w_j^T x_i)
            model.a.grad = net.gamma * (net.act.f(net.preactivations(a_grad_ds.X)).T @ r) / a_grad_ds.n
        return loss

    hooks = [] if on_step is None else [lambda t: on_step(t, *st.hook, net)]
    run = loop.run(opts, step, tc.steps, hooks)
    diverged, message = run.diverged, run.message
    if diverged:
        net = Network(st.good[0], st.good[1], net.gamma, net.act)
        if st.last_good is not None and (not rows or rows[-1].step < st.last_good[0]):  # the last good step, recorded
            add_record(net, *st.last_good, st.U_prev)
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


def _record(cfg, t, ds, step_ds, net, grad, G, reg, penalty, trackers, U_prev, W0, k) -> tuple[TrainRecord, torch.Tensor]:
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
    # the bulk edge's base: ||E||, or ||E + reg|| when a penalty is added to G (gradrank.core.measures.compute)
    norm_B = norm_E if reg is None else float(spectrum(step_ds.X_B, dec.D_perp, dec.coef, 0, dense_add=reg).values[0])
    s = [float(v) for v in tG.s[:k]]
    G_fro = float(G.norm())
    res_cos, spk_cos = abs_cos(tG.U[:, :2], dec.S1.left), abs_cos(tG.U[:, :2], ds.q)
    res_cos, spk_cos = res_cos + [float("nan")] * (2 - len(res_cos)), spk_cos + [float("nan")] * (2 - len(spk_cos))
    record = TrainRecord(
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
        outliers=count_outliers(s, bulk_edge(norm_B, s[0], acfg.edge_margin, tG.s.dtype, tG.residual)),
        stable_rank=stable_rank(G_fro**2, s[0]),
        align_residue_1=res_cos[0],
        align_spike_1=spk_cos[0],
        align_residue_2=res_cos[1],
        align_spike_2=spk_cos[1],
        drift_max_angle=float("nan") if U_prev is None else max_principal_angle(tG.U[:, :k], U_prev),
        drift=float((net.W - W0).norm()),
        track_residual=tG.residual,
        track_fallback=int(tG.fallback),
        track_iterations=tG.iterations,
    )
    return record, dec.S1.left  # X_B^T r's direction, for the feature alignments


def _features(dW: torch.Tensor, tracker: _Tracker, residue: torch.Tensor, q: torch.Tensor, index_basis) -> dict:
    """Feature learning: |cos| of the top right singular vectors of W - W0 (directions in input
    space) with X_B^T r and q, and the norm of their projection on the target's index span."""
    out = dict.fromkeys(FEATURE_COLUMNS, float("nan"))
    if not bool(dW.abs().max() > 0):
        return out
    D = dW.T  # d x m: its left singular vectors are W - W0's input-space directions
    V = tracker(lambda X: D @ X, lambda U: D.T @ U, lambda: dense_spectrum(D, tracker.block.shape[1])).U[:, : tracker.k]
    for i, (c_r, c_q) in enumerate(zip(abs_cos(V, residue), abs_cos(V, q))):
        out[f"feat_residue_{i + 1}"], out[f"feat_spike_{i + 1}"] = c_r, c_q
        if index_basis is not None:
            out[f"feat_index_{i + 1}"] = float((index_basis.T @ V[:, i]).norm())
    return out


def _batch_terms(cfg: Config, g_b, batch: Dataset, net: Network, G_b: torch.Tensor) -> dict:
    """Operator norms of the mini-batch gradient (penalty included) and of its four terms."""
    mu, _ = compute_mu(cfg.analysis.mu, g_b, batch, net, cfg.analysis.quadrature)
    dec = decompose(g_b, batch, net, mu)
    E = spectrum(batch.X_B, dec.D_perp, dec.coef, 0).values
    return {
        "batch_G": float(dense_spectrum(G_b, 0).values[0]),
        "batch_S1": dec.S1.norm(),
        "batch_S12": dec.S12.norm(),
        "batch_S2": dec.S2.norm(),
        "batch_E": float(E[0]) if E.numel() else 0.0,
    }
