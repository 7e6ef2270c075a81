"""The four-term decomposition of every linear layer's gradient (docs/deep.md).

Per layer, from the captured factors G = H^T D / n (n rows): the input splits as H = H_B + zeta z q^T
(q the data spike where it is known exactly, else the top principal direction of the centred H,
zeta z = H_c q), and D either as D = diag(r) J ("residue" form: scalar outputs, samples that do not
interact, checked to rounding; with C outputs D = sum_c diag(R_c) J_c) or with r = 1 and J = D
("general" form). Then the one split
(core/split.py) gives S1 + S12 + S2 + E with mu = the mean of J's rows, and the analysis'
spectra, measures and outlier rule apply unchanged (core/measures.py).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gradrank.config import Config
from gradrank.core import measures as metrics_mod
from gradrank.core.measures import abs_cos
from gradrank.core.spectra import Spectrum, dense_spectrum, dense_spectrum_pair, factored_route, one_thread_each, top_k
from gradrank.core.split import split
from gradrank.data.spiked import Dataset
from gradrank.errors import InputError
from gradrank.models import capture as capture_mod
from gradrank.models.closed_form import Gradient
from gradrank.models.registry import DataSpike, Problem, linear_layers
from gradrank.studies.analyze import identity_probe, identity_residual, spectra, spectral_residual

SCHEMA = 1


@dataclass
class LayerResult:
    """One layer's measures (layers.json, one entry of "layers")."""

    name: str  # the qualified name named_modules gives
    kind: str  # linear or conv1d
    shape: list[int]  # [d_in, d_out] of G = H^T D / n (nn.Linear's weight.grad transposed)
    samples: int  # N samples over all batches
    rows: int  # n: rows of H (samples x tokens x calls, padding dropped)
    calls: int  # calls per forward (weight tying: > 1)
    form: str  # "residue" (D = diag(r) J) or "general" (r = 1, J = D)
    factorization_error: float | None  # ||D - diag(r) J|| / ||D|| (None: no J captured, e.g. > MAX_OUTPUTS outputs)
    spike: dict  # source (data or principal), zeta, propagated (|cos(q, H_c^T z)| with the data latent z)
    spectrum_route: str  # factored (n < min(d_in, d_out)) or dense
    norms: dict
    shares: dict
    singular_values: list[float]  # top k, descending
    identity_error: float
    rank: dict  # stable, effective, energy90, energy99, outliers
    outliers: int
    bulk_edge: float
    regime: str
    outlier_labels: list[str]
    alignment: dict  # |cos| of the top singular vectors with the residue direction H_B^T r, the spike q, ...
    captured: dict
    spectral_residual: float
    autograd_error: float = 0.0  # ||(H^T D / n - G_autograd) P|| / ||G_autograd P|| on random probes P (checked before analysis)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerResult":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d or f.name != "autograd_error"})


@dataclass
class LayersResult:
    config: Config
    model: str
    source_sha256: str
    dtype: str
    samples: int
    loss: float
    layers: list[LayerResult]
    skipped: dict[str, str]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # "<layer>/G", "<layer>/E": every singular value
    timings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "kind": "layers",
            "model": self.model,
            "source_sha256": self.source_sha256,
            "dtype": self.dtype,
            "samples": self.samples,
            "loss": self.loss,
            "layers": [r.to_dict() for r in self.layers],
            "skipped": [{"name": k, "reason": v} for k, v in self.skipped.items()],
            "timings": self.timings,
            "config": self.config.to_dict(),
            "config_hash": self.config.hash(),
        }

    @classmethod
    def from_dict(cls, d: dict, arrays: dict | None = None) -> "LayersResult":
        from gradrank import config as config_mod

        if d.get("schema") != SCHEMA or d.get("kind") != "layers":
            raise InputError(f"not a layers.json of schema {SCHEMA} (schema {d.get('schema')!r}, kind {d.get('kind')!r})")
        return cls(
            config_mod.from_dict(d["config"]),
            d["model"],
            d["source_sha256"],
            d["dtype"],
            d["samples"],
            d["loss"],
            [LayerResult.from_dict(r) for r in d["layers"]],
            {s["name"]: s["reason"] for s in d["skipped"]},
            dict(arrays or {}),
            d.get("timings", {}),
        )

    def layer(self, name: str) -> LayerResult:
        for r in self.layers:
            if r.name == name:
                return r
        raise InputError(f"no analysed layer named {name!r}")


def input_spike(f: capture_mod.LayerFactors, known: DataSpike | None) -> tuple[torch.Tensor, torch.Tensor, float, str]:
    """(q, z, zeta, source) with H = H_B + zeta z q^T: the data's own spike where this layer's rows
    are the data's samples, else the top principal direction q of the centred H and zeta z = H_c q,
    ||z||^2 = n; the sign of q makes z correlate positively with the data latent (when known).
    H_c = H - 1 h^T is applied as an operator (never formed)."""
    if _data_spike(f, known):
        return known.q, known.z[f.sample], known.zeta, "data"
    mean = f.H.mean(0)
    q = top_direction(f.H, mean)
    zz = f.H @ q - mean @ q  # H_c q
    zeta = float(zz.norm()) / math.sqrt(f.rows)
    if known is not None and f.sample is not None and float(zz @ known.z[f.sample]) < 0:
        q, zz = -q, -zz
    return q, zz / zeta if zeta > 0 else zz, zeta, "principal"


def _data_spike(f: capture_mod.LayerFactors, known: DataSpike | None) -> bool:
    return known is not None and known.layer == f.name and f.calls == 1 and f.sample is not None and f.rows == f.samples


def top_direction(H: torch.Tensor, mean: torch.Tensor, block: int = 4) -> torch.Tensor:
    """The top right singular vector of the centred H_c = H - 1 mean^T (n x d) by block Krylov on
    H_c^T (a few products with H; H_c is never formed)."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(H.shape[1], min(block, *H.shape), generator=g, dtype=torch.float64).to(H)
    tol = max(1e-6, 100 * torch.finfo(H.dtype).eps) ** 0.5  # angle error ~ tol s_1 / gap: ~1e-3 for alignments
    t = top_k(
        lambda V: H.T @ V - torch.outer(mean, V.sum(0)),  # H_c^T V
        lambda U: H @ U - mean @ U,  # H_c U
        start,
        1,
        tol,
        exact=lambda: dense_spectrum((H - mean).T, start.shape[1]),
    )
    return t.U[:, 0]


@dataclass
class LayerGradient(Gradient):
    """A layer's gradient: the factors, and autograd's own G where the capture has it (products and the
    dense matrix then come from it, so the identity is checked against autograd, not the factors)."""

    G: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        return super().dense() if self.G is None else self.G

    def mv(self, V: torch.Tensor) -> torch.Tensor:
        return super().mv(V) if self.G is None else self.G @ V

    def rmv(self, U: torch.Tensor) -> torch.Tensor:
        return super().rmv(U) if self.G is None else self.G.T @ U


def _factor_tol(dtype: torch.dtype) -> float:
    """D = diag(r) J holds to rounding when samples do not interact; sqrt(eps) separates that from interaction."""
    return torch.finfo(dtype).eps ** 0.5


def decompose_layer(f: capture_mod.LayerFactors, known: DataSpike | None = None, shared: dict | None = None):
    """(Dataset, Gradient, Decomposition, form, factorization error, spike source) for one layer's factors.
    shared: a cache of the input split (q, z, zeta, source, X_B) for layers reading the same input rows
    (a transformer's query, key and value: the capture keeps one H for them)."""
    H, D, n = f.H, f.D, f.rows
    err = None
    form = "general"
    if f.J is not None and f.r is not None:
        rJ = f.r[:, None] * f.J if f.r.ndim == 1 else torch.einsum("nc,cnm->nm", f.r, f.J)  # C outputs: sum_c r_c J_c
        err = float((D - rJ).norm()) / max(float(D.norm()), 1e-300)
        if err <= _factor_tol(D.dtype):
            form = "residue"
    r, J = (f.r, f.J) if form == "residue" else (torch.ones(n, dtype=D.dtype, device=D.device), D)
    mu = J.mean(0) if J.ndim == 2 else J.mean(1).T  # the mean of J's rows (C outputs: m x C, one per output)
    key = None if shared is None or _data_spike(f, known) else (H.data_ptr(), tuple(H.shape), H.stride(), H.dtype)
    if key is not None and key in shared:
        q, z, zeta, source, X_B = shared[key]
    else:
        q, z, zeta, source = input_spike(f, known)
        X_B = torch.addr(H, z, q, alpha=-zeta)  # H - zeta z q^T
        if key is not None:
            shared[key] = q, z, zeta, source, X_B
    ones = torch.ones(D.shape[1], dtype=D.dtype, device=D.device)
    dec = split(1.0 / n, X_B, zeta, z, q, r, ones, J, mu)
    ds = Dataset(H, torch.empty(0), X_B, q, z, zeta, torch.empty(0), population=False)
    grad = LayerGradient(H, r, J, D, 1.0 / n, float("nan"), f.G)
    return ds, grad, dec, form, err, source


def analyze_layer(
    f: capture_mod.LayerFactors, cfg: Config, known: DataSpike | None = None, shared: dict | None = None
) -> tuple[LayerResult, dict]:
    """One layer's decomposition and measures, and its full spectra (G's and E's values)."""
    acfg = cfg.analysis
    ds, grad, dec, form, err, source = decompose_layer(f, known, shared)
    d, m, n = f.H.shape[1], f.D.shape[1], f.rows
    route = "factored" if factored_route(n, d, m) else "dense"
    accurate = acfg.spectrum == "svd"
    if route == "factored":
        spec_G, spec_E = spectra(grad, ds, dec, acfg.top_k, None, accurate)
    else:  # one Gram of G, E's as its low-rank update (E = G - (S1 + S12 + S2); the identity is checked from E's own factors)
        spec_G, spec_E = dense_spectrum_pair(grad.dense(), *dec.spikes(), acfg.top_k, accurate)
    identity = identity_residual(grad.dense(), dec, ds.X_B) if acfg.identity == "dense" else identity_probe(grad, dec, ds.X_B)
    m_ = metrics_mod.compute(spec_G, spec_E, dec, grad.rmv, ds.q, torch.ones_like(dec.mu), None, identity, acfg)
    propagated = None
    if known is not None and f.sample is not None:
        z = known.z[f.sample]
        propagated = abs_cos(ds.q[:, None], f.H.T @ z - f.H.mean(0) * z.sum())[0]  # H_c^T z
    res = LayerResult(
        name=f.name,
        kind=f.kind,
        shape=[d, m],
        samples=f.samples,
        rows=n,
        calls=f.calls,
        form=form,
        factorization_error=err,
        spike={"source": source, "zeta": ds.zeta, "propagated": propagated},
        spectrum_route=route,
        norms=m_["norms"],
        shares=m_["shares"],
        singular_values=m_["singular_values"],
        identity_error=identity,
        rank=m_["rank"],
        outliers=m_["rank"]["outliers"],
        bulk_edge=m_["bulk_edge"],
        regime=m_["regime"],
        outlier_labels=m_["outlier_labels"],
        alignment=m_["alignment"],
        captured=m_["captured"],
        spectral_residual=spectral_residual(grad.mv, grad.rmv, spec_G, m_["norms"]["E"]),
        autograd_error=f.autograd_error,
    )
    arrays = {f"{f.name}/G": _np(spec_G), f"{f.name}/E": _np(spec_E)}
    return res, arrays


def _np(spec: Spectrum) -> np.ndarray:
    return spec.values.detach().cpu().double().numpy()


def analyze_problem(problem: Problem, cfg: Config, guard=None, on_layer=None) -> LayersResult:
    """Capture every chosen layer's factors over the problem's batches, then decompose each.

    guard(bytes): called with the capture's estimated peak before it accumulates (the memory guard);
    on_layer(i, total, name): progress."""
    timings: dict[str, Any] = {}
    patterns = list(cfg.layers.patterns) or problem.layers
    layers = linear_layers(problem.model, patterns)
    clock = time.perf_counter()
    cap = capture_mod.capture(problem, layers, guard=guard, workers=analysis_workers(problem.model))
    timings.update(cap.timings)
    timings["capture"] = time.perf_counter() - clock
    result = analyze_capture(cap, cfg, problem, on_layer)
    result.timings = {**timings, **result.timings}
    return result


def analysis_workers(model: torch.nn.Module) -> int:
    """How many layers `analyze_capture` analyses at once: torch's threads on the CPU, else 1."""
    p = next(model.parameters(), None)
    return torch.get_num_threads() if p is None or p.device.type == "cpu" else 1


def analyze_capture(cap, cfg: Config, problem: Problem, on_layer=None) -> LayersResult:
    """Decompose every captured layer (the problem gives the name, the file hash and the known spike).

    The layers are independent: on the CPU they run side by side, one torch thread each, as many at
    once as torch had threads (docs/performance.md, "Threads"); layers reading the same input rows
    run in one task and share its split. Each layer's numbers are the same however many run at once."""
    items = list(cap.layers.items())
    groups: dict[tuple, list[int]] = {}
    for i, (_, f) in enumerate(items):
        groups.setdefault((f.H.data_ptr(), tuple(f.H.shape), f.H.stride()), []).append(i)
    done, lock = [0], threading.Lock()

    def task(indices: list[int]) -> list[tuple[int, tuple[LayerResult, dict]]]:
        shared, out = {}, []
        with torch.no_grad():  # grad mode is per thread
            for i in indices:
                if on_layer is not None:
                    with lock:
                        on_layer(done[0], len(items), items[i][0])
                        done[0] += 1
                out.append((i, analyze_layer(items[i][1], cfg, problem.spike, shared)))
        return out

    clock = time.perf_counter()
    first = items[0][1]
    slots: list = [None] * len(items)
    with one_thread_each(first.H.device) as workers:
        workers = min(workers, len(groups))
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                chunks = list(pool.map(task, groups.values()))
        else:
            chunks = [task(g) for g in groups.values()]
    for chunk in chunks:
        for i, out in chunk:
            slots[i] = out
    results = [res for res, _ in slots]
    arrays = {k: v for _, arr in slots for k, v in arr.items()}
    timings = {"analysis": time.perf_counter() - clock, "analysis_workers": workers}
    dtype = str(first.H.dtype).removeprefix("torch.")
    cfg = cfg.replace(**{"layers.model": problem.name, "layers.model_sha256": problem.source_sha256})
    return LayersResult(
        cfg, problem.name, problem.source_sha256, dtype, cap.samples, cap.loss, results, cap.skipped, arrays, timings
    )


def run(cfg: Config, force: bool = False, on_layer=None) -> LayersResult:
    """The SPEC in cfg.layers.model resolved and analysed, the memory guard applied unless forced."""
    from gradrank.config.resources import check_bytes
    from gradrank.models.registry import resolve

    problem = resolve(cfg.layers.model, cfg)
    guard = None if force else (lambda need: check_bytes(cfg, need, f"--model {problem.name}: capturing every chosen layer"))
    return analyze_problem(problem, cfg, guard, on_layer)
