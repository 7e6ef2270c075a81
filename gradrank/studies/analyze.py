"""The analysis pipeline: config -> data -> network -> gradient -> decomposition -> metrics.

Every command (analyze, decompose, train, sweep) goes through `analyze_state`, so the math
lives in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gradrank.config import ComputeConfig, Config, ModelConfig
from gradrank.config.resources import blame
from gradrank.core import measures as metrics_mod
from gradrank.core.floors import NORM_FLOOR, resolution, tiny
from gradrank.core.records import DataFacts, Metrics, Sizes
from gradrank.core.spectra import Spectrum, spectrum, spectrum_pair
from gradrank.core.split import Terms
from gradrank.core.trust import signal, trust
from gradrank.data import spiked as data_mod
from gradrank.data.spiked import Dataset
from gradrank.errors import InputError
from gradrank.models import regularizers
from gradrank.models import twolayer as network
from gradrank.models.closed_form import RangeError, _fro, gradient
from gradrank.models.mu import compute_mu, decompose
from gradrank.models.registry import device
from gradrank.models.twolayer import Network


@dataclass
class Analysis:
    """One analysis: its resolved config, typed metrics (metrics.json), the arrays of arrays.npz,
    timings, and the four terms as factors (on the compute device; not stored in a run directory)."""

    config: Config
    metrics: Metrics
    arrays: dict[str, np.ndarray]
    timings: dict = field(default_factory=dict)
    terms: Terms | None = None


def device_and_dtype(cc: ComputeConfig) -> tuple[torch.device, torch.dtype]:
    return device(cc), getattr(torch, cc.dtype)


def analyze_state(cfg: Config, ds: Dataset, net: Network, timings: dict | None = None, noise_draw: int = 0) -> Analysis:
    """Decompose the gradient at (data, weights) already on the compute device.

    Input noise (single/average) changes the data the loss gradient is taken at, the noise joining
    the bulk (regularizers.noisy_data, draw `noise_draw`); the dense regularisers (weight decay,
    Jacobian, noise surrogate) are taken at the clean data and reported as the term "reg"."""
    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        if ds.X.is_cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    acfg = cfg.analysis
    clean, ds = ds, regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, noise_draw)
    try:
        grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    except RangeError as exc:
        raise blame(cfg, exc.part, str(exc)) from None
    reg = regularizers.penalty_gradient(cfg.regularizer, net, clean.X, clean.y, cfg.loss.kind)
    lap("gradient")
    mu, mu_err = compute_mu(acfg.mu, grad, ds, net, acfg.quadrature)
    dec = decompose(grad, ds, net, mu, mu_err)
    if acfg.identity == "dense":
        identity_error = identity_residual(grad.dense(), dec, ds.X_B)
    else:
        identity_error = identity_probe(grad, dec, ds.X_B)
    lap("decomposition")
    accurate = acfg.spectrum == "svd"
    spec_G, spec_E = spectra(grad, ds, dec, acfg.top_k, reg, accurate)
    lap("spectrum")
    mv, rmv = grad.operator(reg)  # G = G_loss + reg, never formed unless reg is
    reg_term = None if reg is None else metrics_mod.reg_term(reg, dec.S1.left, ds.q, spec_G.fro2)
    # with a penalty the bulk is E + reg (metrics module docstring): its norm sets the bulk edge
    bulk = None if reg is None else float(spectrum(ds.X_B, dec.D_perp, dec.coef, 0, dense_add=reg, accurate=accurate).values[0])
    measured = metrics_mod.compute(spec_G, spec_E, dec, rmv, ds.q, net.a, reg_term, identity_error, acfg, bulk)
    residual = spectral_residual(mv, rmv, spec_G, measured["norms"].E)
    m = Metrics(
        sizes=Sizes(ds.n, ds.d, net.m),
        data=DataFacts(
            source=cfg.data.source,
            zeta=ds.zeta,
            nu=ds.info.get("nu"),
            alpha_fit=ds.info.get("alpha_fit"),
            alpha_fit_r2=ds.info.get("alpha_fit_r2"),
            synthetic_targets=ds.info.get("synthetic_targets") or None,
        ),
        **measured,
        loss=grad.loss + regularizers.penalty_value(cfg.regularizer, net, clean.X, clean.y, cfg.loss.kind),
        spectral_residual=residual,
        trust=trust(
            acfg,
            cfg.compute.dtype,
            measured["norms"],
            measured["singular_values"],
            identity_error,
            residual,
            mu_err,
            notes(cfg, ds),
            signal(
                cfg.compute.dtype,
                measured["singular_values"],
                ds.n,
                grad.coef * _fro(grad.X) * _fro(grad.D),
                ds.info.get("rounding"),
            ),
        ),
        config_hash=cfg.hash(),
    )
    lap("metrics")
    arrays = {
        "singular_values": spec_G.values,
        "E_singular_values": spec_E.values,
        "U": spec_G.U,
        "V": spec_G.V,
        "residue_dir": dec.S1.left,
        "q": ds.q,
        "mu": mu,
        "a": net.a,
        "spike_right": dec.S2.right,
        "bulk_eigenvalues": ds.eigenvalues,
    }
    arrays = {k: v.detach().cpu().double().numpy() for k, v in arrays.items()}
    return Analysis(cfg, m, arrays, timings, dec.terms(ds.X_B))


def spectra(grad, ds: Dataset, dec, k: int, reg: torch.Tensor | None, accurate: bool) -> tuple[Spectrum, Spectrum]:
    """G's spectrum (values, top-k triplets) and E's values.

    Without a dense penalty, E is a rank-2 change of G's right factor (section 3, X_B = X - zeta z q^T,
    D_perp = D - r (a o mu)^T): E = coef [X; q^T]^T ([D; 0] - U B^T), U = [[r, 0], [0, zeta]],
    B = [a o mu, D_perp^T z], so both come from one QR and one Gram (spectral.spectrum_pair);
    E = coef X_B^T D_perp has rank <= n."""
    exact_E = lambda: spectrum(ds.X_B, dec.D_perp, dec.coef, 0, accurate=accurate)  # noqa: E731
    if reg is not None:
        return spectrum(ds.X, grad.D, grad.coef, k, dense_add=reg, accurate=accurate), exact_E()
    n = ds.n
    if grad.r.ndim == 1:
        U = grad.D.new_zeros(n + 1, 2)
        U[:n, 0], U[n, 1] = grad.r, ds.zeta
        B = torch.stack([dec.S1.right, dec.S2.right], 1)  # a o mu, D_perp^T z
    else:  # C outputs (a layer's residue form): U = [[R, 0], [0, zeta]], B = [a o mu_1..C, D_perp^T z]
        C = grad.r.shape[1]
        U = grad.D.new_zeros(n + 1, C + 1)
        U[:n, :C], U[n, C] = grad.r, ds.zeta
        B = torch.cat([dec.S1.right, dec.S2.right[:, None]], 1)
    return spectrum_pair(torch.cat([ds.X, ds.q[None]]), grad.D, U, B, grad.coef, k, exact_E, accurate, rank_other=n)


def identity_probe(grad, dec, X_B: torch.Tensor, probes: int = 8) -> float:
    """||(G_loss - S1 - S12 - S2 - E) Omega||_F / ||G_loss Omega||_F for a fixed m x 8 Gaussian Omega,
    every term applied from its own factors (G from X and D, E from X_B and D_perp): no d x m matrix
    is formed. ||A Omega||_F^2 / 8 is an unbiased estimate of ||A||_F^2 (relative spread 0.5), and
    any discrepancy between the terms shows with probability one."""
    g = torch.Generator().manual_seed(0)
    Omega = torch.randn(grad.D.shape[1], probes, generator=g, dtype=torch.float64).to(grad.D)
    G_Om = grad.mv(Omega)
    left, right = dec.spikes()
    diff = G_Om - dec.coef * (X_B.T @ (dec.D_perp @ Omega)) - left @ (right @ Omega)
    return float(diff.norm()) / max(float(G_Om.norm()), NORM_FLOOR)


def identity_residual(G_loss: torch.Tensor, dec, X_B: torch.Tensor, block_bytes: int = 1 << 25) -> float:
    """||G_loss - (S1 + S12 + S2 + E)||_F / ||G_loss||_F, every term dense: E = coef X_B^T D_perp
    by a GEMM and the rank-one terms by one rank-3 update, over column blocks of ~block_bytes."""
    left, right = dec.spikes()
    step = max(1, block_bytes // (G_loss.element_size() * G_loss.shape[0]))
    diff2 = 0.0
    for j in range(0, G_loss.shape[1], step):
        cols = slice(j, j + step)
        diff = torch.addmm(G_loss[:, cols], X_B.T, dec.D_perp[:, cols], alpha=-dec.coef)
        diff2 += float(diff.addmm_(left, right[:, cols], alpha=-1).pow(2).sum())
    return diff2**0.5 / max(float(G_loss.norm()), NORM_FLOOR)


def notes(cfg: Config, ds: Dataset) -> list[str]:
    """Warnings about the input rather than the numbers: synthetic targets, an unreachable top_k."""
    out = []
    if ds.info.get("synthetic_targets"):
        out.append(
            f"{ds.info.get('source', 'the data')} has no targets y: synthetic targets were drawn from its X "
            f"(data.target = {ds.info['synthetic_targets']}); add y to the file to use your own"
        )
    k_max = min(ds.n, ds.d, cfg.model.width)
    if cfg.analysis.top_k > k_max:
        out.append(f"analysis.top_k = {cfg.analysis.top_k} exceeds min(n, d, m) = {k_max}: only {k_max} singular vectors exist")
    return out


def spectral_residual(mv, rmv, spec, scale: float) -> float:
    """max_k max(||G v_k - s_k u_k||, ||G^T u_k - s_k v_k||) / max(s_k, scale) over the top-k
    triplets (mv, rmv: V -> G V, U -> G^T U): an independent check of the Gram-based spectrum, whose
    error grows like eps (s_1 / s_k)^2 (scale = ||E||, the bulk edge the outlier count is measured against)."""
    s = spec.s
    keep = s > s[0] * resolution(s.dtype) if s.numel() else s > 0  # numerically null triplets have no direction
    s, U, V = s[keep], spec.U[:, keep], spec.V[:, keep]
    if not s.numel():
        return 0.0
    U, V = U / U.norm(dim=0).clamp_min(NORM_FLOOR), V / V.norm(dim=0).clamp_min(NORM_FLOOR)
    res = torch.maximum((mv(V) - U * s).norm(dim=0), (rmv(U) - V * s).norm(dim=0))
    return float((res / s.clamp_min(max(scale, tiny(s.dtype)))).max())


def prepare(cfg: Config) -> tuple[Config, Dataset, Network]:
    """Data and initial network for a config (or its model.weights file), on its device and dtype."""
    device, dtype = device_and_dtype(cfg.compute)
    ds = data_mod.load(cfg.data, cfg.seed, cfg.loss.kind)
    if not cfg.model.weights:
        net = network.init(cfg.model, cfg.seed, ds)
    else:
        net = load_weights(cfg.model, cfg.model.weights, ds.d)
        cfg = cfg.replace(**{"model.width": net.m})
    return cfg, ds.to(device, dtype), net.to(device, dtype)


def load_weights(mc: ModelConfig, path, d: int) -> Network:
    """W (m x d) and a (m) from an .npz file."""
    from gradrank.io import load_arrays

    def check(shapes):  # from the headers, before anything is read
        W, a = tuple(shapes["W"]), tuple(shapes["a"])
        if len(W) != 2 or W[1] != d:
            raise InputError(f"{path}: W must have shape (m, {d}) to match the data, got {W}")
        if a != (W[0],):
            raise InputError(f"{path}: a must have shape ({W[0]},), got {a}")

    arrays = load_arrays(path, required=("W", "a"), check=check)
    return network_from_arrays(mc, arrays["W"], arrays["a"])


def network_from_arrays(mc: ModelConfig, W: np.ndarray, a: np.ndarray) -> Network:
    """The paper's network with given W (m x d) and a (m), scaling and activation from the config."""
    from gradrank.core.activations import get

    m = W.shape[0]
    return Network(torch.as_tensor(W), torch.as_tensor(a), network.gamma_m(mc, m), get(mc.activation, mc.leaky_slope))


def analyze(cfg: Config) -> Analysis:
    """The whole analysis of a resolved config."""
    t = time.perf_counter()
    cfg, ds, net = prepare(cfg)
    return analyze_prepared(cfg, ds, net, {"setup": time.perf_counter() - t})


def analyze_prepared(cfg: Config, ds: Dataset, net: Network, timings: dict | None = None) -> Analysis:
    """The analysis at given data and weights (on the compute device)."""
    timings = {} if timings is None else timings
    return analyze_state(cfg, ds, net, timings)
