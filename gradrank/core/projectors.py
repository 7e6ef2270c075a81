"""Captured gradient energy of rank-r projectors refreshed every T steps (docs/advisor.md, "Definition").

For the gradients G_0 ... G_{S-1} of one weight, a projector refreshed every T steps captures

    captured(r, T) = mean_t ||P_{t0}(G_t)||_F^2 / ||G_t||_F^2,   t0 = T floor(t / T),

with P_{t0} the projection on a rank-r subspace chosen at t0, on the side GaLore projects: for the
parameter-shaped gradient (rows x cols) the right singular vectors when rows >= cols, else the left
ones. Both cases are one: A = G if rows >= cols else G^T is long x short, the subspace lives in
R^short, and P(G) captures ||A B||_F^2 for an orthonormal basis B (short x r).

Every basis is nested (its first r columns span the rank-r subspace), so one product A_t B_{t0}
with the widest basis gives every rank at once by prefix sums, and a basis at t0 serves every
interval with the same t0. Nothing d x m is stored between steps: per step only A_t B for the
distinct bases in use, the squared column norms of A_t and, at a refresh, the top-k right singular
vectors by warm-started block Krylov (`gradrank.core.spectra.top_k`, started from the previous refresh's block).

Projectors: svd (GaLore: top-r right singular vectors of A_{t0}), random (a fresh Gaussian subspace at
each refresh, as Flora), rows (the r coordinates of R^short whose columns of A_{t0} have the largest
norms, as GRASS), theory (two-layer model only: the span of the given theory directions at t0,
span{X_B^T r, q} on the input side and span{a o mu, a o (Sigma'_perp^T (z o r))} on the output side).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from gradrank.core.measures import max_principal_angle
from gradrank.core.spectra import Spectrum, top_k
from gradrank.errors import InputError
from gradrank.rng import generator

PROJECTORS = ("svd", "random", "rows", "theory")
THEORY_RANKS = (1, 2)


def galore_side(shape: tuple[int, int]) -> str:
    """'right' (basis in R^cols) when the parameter-shaped gradient has rows >= cols, else 'left'."""
    return "right" if shape[0] >= shape[1] else "left"


@dataclass
class SideGradient:
    """One step's gradient of one weight as A (long x short, columns on GaLore's side): the products a
    projector needs, whether A is held dense or factored as coef L^T R (L: n x long, R: n x short).
    Column norms are computed only where asked (the rows projector's refresh and its chosen columns):
    per step the recorder needs ||A||_F^2 and A B, nothing else of size long x short."""

    mv: Callable[[torch.Tensor], torch.Tensor]  # B (short x k) -> A B
    rmv: Callable[[torch.Tensor], torch.Tensor]  # C (long x k) -> A^T C
    norms: Callable[[torch.Tensor | None], torch.Tensor]  # idx -> ||A e_j||^2 for j in idx (None: every j < short)
    fro2: float  # ||A||_F^2
    long: int
    short: int
    dtype: torch.dtype
    device: torch.device
    theory: Callable[[], torch.Tensor] | None = None  # -> short x 2 theory directions (not orthonormal), at a refresh
    dense: torch.Tensor | None = None  # A itself when held (the exact fallback of the top-k)

    @functools.cached_property
    def col_norms2(self) -> torch.Tensor:
        """||A e_j||^2 for every j < short."""
        return self.norms(None)

    @staticmethod
    def of(P: torch.Tensor, theory: Callable[[], torch.Tensor] | None = None) -> "SideGradient":
        """From the dense parameter-shaped gradient P (rows x cols)."""
        A = P if P.shape[0] >= P.shape[1] else P.T

        def norms(idx):
            return torch.linalg.vector_norm(A if idx is None else A[:, idx], dim=0) ** 2

        fro2 = float(torch.linalg.vector_norm(A)) ** 2
        return SideGradient(lambda B: A @ B, lambda C: A.T @ C, norms, fro2, A.shape[0], A.shape[1], A.dtype, A.device, theory, A)

    @staticmethod
    def factored(
        L: torch.Tensor, R: torch.Tensor, coef: float, theory: Callable[[], torch.Tensor] | None = None
    ) -> "SideGradient":
        """A = coef L^T R (L: n x long, R: n x short), never formed; column norms from the n x n Gram L L^T."""
        K = L @ L.T

        def norms(idx):
            Ri = R if idx is None else R[:, idx]
            return coef * coef * (Ri * (K @ Ri)).sum(0)

        fro2 = coef * coef * float((R * (K @ R)).sum())
        mv, rmv = (lambda B: coef * (L.T @ (R @ B))), (lambda C: coef * (R.T @ (L @ C)))
        return SideGradient(mv, rmv, norms, fro2, L.shape[1], R.shape[1], R.dtype, R.device, theory)


def parse_list(text, what: str, kind=int) -> list:
    """'1,2,4' (or a list) -> sorted distinct values; bad entries name the field."""
    items = text if isinstance(text, (list, tuple)) else [s for s in str(text).replace(" ", "").split(",") if s]
    out = []
    for s in items:
        try:
            v = kind(s)
        except (TypeError, ValueError):
            raise InputError(f"{what}: {s!r} is not {'an integer' if kind is int else 'a name'}") from None
        out.append(v)
    if not out:
        raise InputError(f"{what}: empty list")
    return sorted(set(out)) if kind is int else list(dict.fromkeys(out))


def check_grid(ranks, intervals, target: float, projectors, shortest: list[int], theory: bool) -> None:
    """Bad grids are bad input (exit 2): a rank above every layer's smaller dimension, an interval
    below 1, a target outside (0, 1], an unknown projector (theory only for the two-layer model)."""
    if any(r < 1 for r in ranks):
        raise InputError(f"advise.ranks: ranks must be >= 1, got {min(ranks)}")
    if ranks and shortest and min(ranks) > max(shortest):
        raise InputError(f"advise.ranks: rank {min(ranks)} is above every layer's smaller dimension (largest {max(shortest)})")
    if any(T < 1 for T in intervals):
        raise InputError(f"advise.intervals: intervals must be >= 1, got {min(intervals)}")
    if not (0 < target <= 1) or not math.isfinite(target):
        raise InputError(f"advise.target must be in (0, 1], got {target!r}")
    for p in projectors:
        if p not in PROJECTORS:
            raise InputError(f"advise.projectors: unknown projector {p!r} (use {', '.join(PROJECTORS)})")
        if p == "theory" and not theory:
            raise InputError("advise.projectors: 'theory' exists for the two-layer model only")


def block_width(k: int, short: int, long: int) -> int:
    """Columns of the refresh's Krylov block: a few beyond k speed the k-th vector's convergence."""
    return min(k + max(8, k // 2), short, long)


def _orthonormal_nested(V: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on V's columns in order, so the first j columns span the first j of V; a column
    already in the span of the earlier ones (or zero) becomes a zero column (it adds nothing)."""
    out = torch.zeros_like(V)
    for j in range(V.shape[1]):
        v = V[:, j].clone()
        scale = float(v.norm())
        for _ in range(2):
            v = v - out[:, :j] @ (out[:, :j].T @ v)
        nv = float(v.norm())
        if nv > torch.finfo(V.dtype).eps ** 0.5 * max(scale, torch.finfo(V.dtype).tiny) and nv > 0:
            out[:, j] = v / nv
    return out


@dataclass
class LayerEnergy:
    """What the recorder measured for one weight (plain numbers: the results layer serialises them)."""

    name: str
    shape: tuple[int, int]
    side: str
    energy: list[dict]  # {projector, rank, interval, captured, full}
    drift: list[dict]  # {interval, rank, mean_angle, max_angle, refreshes}
    refresh: dict  # {"topk_seconds", "topk_iterations", "refreshes"}
    steps: int


@dataclass
class EnergyRecorder:
    """Accumulates captured(r, T) for every (projector, r, T) of the grid over the steps of one weight."""

    name: str
    shape: tuple[int, int]
    ranks: list[int]
    intervals: list[int]
    projectors: list[str]
    seed: int
    index: int  # the layer's position: its own random stream
    tol: float = 1e-2  # top-k residual / s_1: a Ritz basis this close loses ~tol^2 of the share (docs/advisor.md)
    steps: int = 0
    _sums: dict = field(default_factory=dict)
    _bases: dict = field(default_factory=dict)  # (projector, t0) -> basis (short x k) or index tensor (rows)
    _last: dict = field(default_factory=dict)  # (projector, T) -> t0 of its basis in use
    _drift: dict = field(default_factory=dict)  # (T, r) -> list of angles
    _block: torch.Tensor | None = None
    _topk_seconds: float = 0.0
    _topk_iterations: int = 0
    _refreshes: int = 0

    def __post_init__(self):
        self.short, self.long = min(self.shape), max(self.shape)
        self.k = max((r for r in self.ranks if r < self.short), default=0)  # wider ranks capture everything
        for p in self.projectors:
            width = len(THEORY_RANKS) if p == "theory" else self.k
            self._sums[p] = torch.zeros(len(self.intervals), width, dtype=torch.float64)

    def observe(self, t: int, g: SideGradient) -> None:
        """Add step t's shares (t counts from 0 and must be consecutive)."""
        if t != self.steps:
            raise ValueError(f"steps must be observed in order (expected {self.steps}, got {t})")
        fro2 = g.fro2
        keys: dict[str, list[tuple]] = {p: [] for p in self.projectors}
        for p in self.projectors:
            if self.k == 0 and p != "theory":
                continue
            for T in self.intervals:
                t0 = T * (t // T)
                key = (p, t0)
                if key not in self._bases:
                    self._bases[key] = self._refresh(p, t0, g)
                prev = self._last.get((p, T))
                if p == "svd" and prev is not None and prev != t0:
                    self._record_drift(T, self._bases[(p, prev)], self._bases[key])
                self._last[(p, T)] = t0
                keys[p].append(key)
        products = self._captured(sorted({key for ks in keys.values() for key in ks}), g)
        shares = {p: [products[key] for key in ks] for p, ks in keys.items()}
        in_use = {(p, t0) for (p, _), t0 in self._last.items()}
        for key in [key for key in self._bases if key not in in_use]:
            del self._bases[key]
        for p in self.projectors:
            if shares[p]:  # a zero gradient: every projector captures all of nothing
                self._sums[p] += torch.stack(shares[p]).double().cpu() / fro2 if fro2 > 0 else 1.0
        self.steps += 1

    def _refresh(self, p: str, t0: int, g: SideGradient) -> torch.Tensor:
        k, dtype, device = self.k, g.dtype, g.device
        if p == "svd":
            return self._top(g)
        if p == "random":
            gen = generator(self.seed, "projector_random", self.index, t0)
            Z = torch.randn(self.short, k, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
            return torch.linalg.qr(Z)[0]
        if p == "rows":
            return torch.argsort(g.col_norms2, descending=True, stable=True)[:k]
        if g.theory is None:
            raise InputError(f"layer {self.name}: the theory projector needs the two-layer model's directions")
        return _orthonormal_nested(g.theory()[:, : len(THEORY_RANKS)])

    def _top(self, g: SideGradient) -> torch.Tensor:
        """Top-k right singular vectors of A (the top left ones of A^T), warm-started from the last refresh."""
        k, dtype, device = self.k, g.dtype, g.device
        b = block_width(k, self.short, self.long)
        if self._block is None or self._block.shape[1] != b:
            gen = generator(self.seed, "projector_start", self.index)
            self._block = torch.randn(self.short, b, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        exact = None
        if g.dense is not None:
            A = g.dense

            def exact():
                _, s, Vh = torch.linalg.svd(A, full_matrices=False)
                return Spectrum(s, Vh.T, s, None, float((s * s).sum()))

        start = time.perf_counter()
        out = top_k(g.rmv, g.mv, self._block, k, tol=self.tol, exact=exact)
        self._block, out_U = out.U[:, :b], out.U
        self._topk_iterations += out.iterations
        if self._block.shape[1] < b:  # A's range was exhausted: pad the start block for the next refresh
            gen = generator(self.seed, "projector_start", self.index, self._refreshes + 1)
            extra = torch.randn(self.short, b - self._block.shape[1], generator=gen, dtype=torch.float64)
            self._block = torch.cat([self._block, extra.to(device=device, dtype=dtype)], 1)
        self._topk_seconds += time.perf_counter() - start
        self._refreshes += 1
        U = out_U[:, :k]
        if U.shape[1] < k:  # rank-deficient A: complete the basis with anything orthogonal (it captures nothing)
            fill = torch.eye(self.short, dtype=dtype, device=device)
            U = _orthonormal_nested(torch.cat([U, fill], 1))
            U = U[:, U.norm(dim=0) > 0][:, :k]
        return U

    def _captured(self, keys: list[tuple], g: SideGradient) -> dict[tuple, torch.Tensor]:
        """||P_r(A)||_F^2 for every rank r = 1 .. width of each basis (prefix sums); one product A [B_1 B_2 ...]
        for all the subspace bases in use (rows: sums of A's squared column norms)."""
        out = {key: torch.cumsum(g.norms(self._bases[key]), 0) for key in keys if key[0] == "rows"}
        dense = [key for key in keys if key[0] != "rows"]
        if dense:
            bases = [self._bases[key] for key in dense]
            c = (g.mv(torch.cat(bases, 1)) ** 2).sum(0)
            for key, part in zip(dense, torch.split(c, [b.shape[1] for b in bases])):
                out[key] = torch.cumsum(part, 0)
        return out

    def _record_drift(self, T: int, B0: torch.Tensor, B1: torch.Tensor) -> None:
        for r in self.ranks:
            if r < self.short:
                self._drift.setdefault((T, r), []).append(max_principal_angle(B1[:, :r], B0[:, :r]))

    def result(self) -> LayerEnergy:
        energy = []
        S = max(self.steps, 1)
        for p in self.projectors:
            means = self._sums[p] / S
            ranks = list(THEORY_RANKS) if p == "theory" else self.ranks
            for i, T in enumerate(self.intervals):
                for r in ranks:
                    full = p != "theory" and r >= self.short
                    captured = 1.0 if full else min(1.0, float(means[i, r - 1]))
                    energy.append({"projector": p, "rank": r, "interval": T, "captured": captured, "full": full})
        drift = [
            {"interval": T, "rank": r, "mean_angle": sum(a) / len(a), "max_angle": max(a), "refreshes": len(a) + 1}
            for (T, r), a in sorted(self._drift.items())
        ]
        refresh = {
            "refreshes": self._refreshes,
            "topk_seconds": self._topk_seconds / max(self._refreshes, 1),
            "topk_iterations": self._topk_iterations / max(self._refreshes, 1),
        }
        return LayerEnergy(self.name, tuple(self.shape), galore_side(self.shape), energy, drift, refresh, self.steps)


def recommend(energy: list[dict], target: float) -> dict:
    """The smallest rank, then the largest interval, then the largest share, that captures at least
    `target`; if none does, the largest share (then the smallest rank, largest interval), flagged."""
    if not energy:
        raise ValueError("no energy records")
    meets = [e for e in energy if e["captured"] >= target]
    if meets:
        best = min(meets, key=lambda e: (e["rank"], -e["interval"], -e["captured"]))
    else:
        best = max(energy, key=lambda e: (e["captured"], -e["rank"], e["interval"]))
    return {k: best[k] for k in ("projector", "rank", "interval", "captured", "full")} | {"meets_target": bool(meets)}
