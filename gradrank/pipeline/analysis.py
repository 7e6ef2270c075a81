"""The analysis pipeline: config -> data -> network -> gradient -> decomposition -> metrics.

Every command (analyze, decompose, train, sweep) goes through `analyze_state`, so the math
lives in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gradrank.config import Config
from gradrank.config.resources import blame
from gradrank.errors import InputError
from gradrank.linalg.spectral import Spectrum, spectrum, spectrum_pair
from gradrank.measures import metrics as metrics_mod
from gradrank.twolayer import data as data_mod
from gradrank.twolayer import network, regularizers
from gradrank.twolayer.data import Dataset
from gradrank.twolayer.gradient import RangeError, _fro, gradient
from gradrank.twolayer.mu import compute_mu, decompose
from gradrank.twolayer.network import Network


@dataclass
class Result:
    config: Config
    metrics: dict
    arrays: dict[str, np.ndarray]
    timings: dict = field(default_factory=dict)


def device_and_dtype(cfg: Config) -> tuple[torch.device, torch.dtype]:
    if cfg.compute.device == "cuda" and not torch.cuda.is_available():
        raise InputError("config key 'compute.device' = cuda, but no CUDA device is available")
    return torch.device(cfg.compute.device), getattr(torch, cfg.compute.dtype)


def analyze_state(cfg: Config, ds: Dataset, net: Network, timings: dict | None = None, noise_draw: int = 0) -> Result:
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
    clean, ds = ds, regularizers.noisy_data(cfg, ds, noise_draw)
    try:
        grad = gradient(net, ds.X, ds.y, cfg.loss.kind)
    except RangeError as exc:
        raise blame(cfg, exc.part, str(exc)) from None
    reg = regularizers.penalty_gradient(cfg, net, clean.X, clean.y, cfg.loss.kind)
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
    reg_m = None if reg is None else reg_metrics(reg, dec.S1.left, ds.q, spec_G.fro2)
    m = metrics_mod.compute(spec_G, spec_E, dec, rmv, ds.q, net.a, None if reg is None else reg_m["norm"], identity_error, acfg)
    if reg is not None:
        m["reg"] = reg_m
        m["shares"]["reg"] = reg_m["share"]
    m["loss"] = grad.loss + regularizers.penalty_value(cfg, net, clean.X, clean.y, cfg.loss.kind)
    m["spectral_residual"] = spectral_residual(mv, rmv, spec_G, m["norms"]["E"])
    m["trust"] = trust(cfg, m, mu_err, ds, grad.coef * _fro(grad.X) * _fro(grad.D))
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
    return Result(cfg, m, arrays, timings)


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
    U = grad.D.new_zeros(n + 1, 2)
    U[:n, 0], U[n, 1] = grad.r, ds.zeta
    B = torch.stack([dec.S1.right, dec.S2.right], 1)  # a o mu, D_perp^T z
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
    return float(diff.norm()) / max(float(G_Om.norm()), 1e-300)


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
    return diff2**0.5 / max(float(G_loss.norm()), 1e-300)


def reg_metrics(reg: torch.Tensor, residue_dir: torch.Tensor, q: torch.Tensor, G_fro2: float) -> dict:
    """The regulariser's own term: its size, its share of ||G||_F^2, and the fraction of its Frobenius
    norm along the residue direction X_B^T r and along the spike q (||u^T reg|| / ||reg||_F)."""
    fro = float(reg.norm())

    def along(v: torch.Tensor) -> float:
        nv = float(v.norm())
        return float((v @ reg).norm()) / (nv * fro) if fro > 0 and nv > 0 else 0.0

    return {
        "norm": float(torch.linalg.matrix_norm(reg, 2)),
        "fro": fro,
        "share": fro**2 / max(G_fro2, 1e-300),
        "residue": along(residue_dir),
        "spike": along(q),
    }


def trust(cfg: Config, m: dict, mu_err: float, ds: Dataset, bound: float = 0.0) -> dict:
    """Flags that say when a number should not be believed (reported, never hidden). `bound` is
    coef ||X||_F ||D||_F >= ||G_loss||_F: a gradient within n eps of it (cancellation), zero, or
    near underflow, or data that centring reduced to rounding error, is noise, not structure."""
    tol = cfg.analysis.identity_tol if cfg.compute.dtype == "float64" else max(cfg.analysis.identity_tol, 1e-4)
    finite = all(np.isfinite(v) for v in m["norms"].values()) and bool(np.isfinite(m["singular_values"]).all())
    spec_tol = 1e-3 if cfg.compute.dtype == "float64" else 1e-2
    floor = m["singular_values"][0] * np.finfo(cfg.compute.dtype).eps ** 0.5
    checks = {
        "finite": finite,
        "identity": m["identity_error"] <= tol,
        "quadrature": mu_err <= 1e-6,
        "spectrum": m.get("spectral_residual", 0.0) <= spec_tol,
        "resolution": bool((1 + cfg.analysis.edge_margin) * m["norms"]["E"] >= floor or m["norms"]["E"] == 0),
        "signal": _signal(cfg, m, ds, bound) is None,
    }
    warnings = [] if checks["signal"] else [_signal(cfg, m, ds, bound)]
    if not finite:
        warnings.append("non-finite values in the gradient or its spectrum")
    if not checks["identity"]:
        warnings.append(f"decomposition identity error {m['identity_error']:.2e} exceeds {tol:.0e}")
    if not checks["quadrature"]:
        warnings.append(f"Gauss-Hermite quadrature for mu not converged (change {mu_err:.1e}); raise analysis.quadrature")
    if not checks["spectrum"]:
        warnings.append(
            f"top singular triplets not converged (residual {m['spectral_residual']:.1e} > {spec_tol:.0e}): "
            "singular values, outlier count and regime are unreliable"
        )
    if not checks["resolution"]:
        warnings.append(
            f"||E|| = {m['norms']['E']:.2e} is below the {cfg.compute.dtype} resolution s_1 sqrt(eps) = "
            f"{floor:.2e} of G's spectrum: outliers between them cannot be counted"
        )
    return {"ok": all(checks.values()), "checks": checks, "warnings": warnings}


def _signal(cfg: Config, m: dict, ds: Dataset, bound: float) -> str | None:
    """Why G is at rounding level (None when it is not)."""
    fi = np.finfo(cfg.compute.dtype)
    s1 = float(m["singular_values"][0]) if len(m["singular_values"]) else 0.0
    if ds.info.get("rounding"):
        return ds.info["rounding"]
    if not s1 > 0:
        return "the gradient's spectrum is zero (zero weights or residues, or underflow): there is no structure to classify"
    if s1 < fi.tiny / fi.eps:
        return f"||G|| = {s1:.1e} is within rounding of {cfg.compute.dtype}'s underflow: spectrum and regime are noise"
    if s1 <= ds.n * fi.eps * bound:
        return f"||G|| = {s1:.1e} is at the rounding level of its sum ({ds.n} eps x {bound:.1e}): spectrum and regime are noise"
    return None


def spectral_residual(mv, rmv, spec, scale: float) -> float:
    """max_k max(||G v_k - s_k u_k||, ||G^T u_k - s_k v_k||) / max(s_k, scale) over the top-k
    triplets (mv, rmv: V -> G V, U -> G^T U): an independent check of the Gram-based spectrum, whose
    error grows like eps (s_1 / s_k)^2 (scale = ||E||, the bulk edge the outlier count is measured against)."""
    s = spec.s
    keep = s > s[0] * torch.finfo(s.dtype).eps ** 0.5 if s.numel() else s > 0  # numerically null triplets have no direction
    s, U, V = s[keep], spec.U[:, keep], spec.V[:, keep]
    if not s.numel():
        return 0.0
    U, V = U / U.norm(dim=0).clamp_min(1e-300), V / V.norm(dim=0).clamp_min(1e-300)
    res = torch.maximum((mv(V) - U * s).norm(dim=0), (rmv(U) - V * s).norm(dim=0))
    return float((res / s.clamp_min(max(scale, torch.finfo(s.dtype).tiny))).max())


def prepare(cfg: Config) -> tuple[Config, Dataset, Network]:
    """Data and initial network for a config (or its model.weights file), on its device and dtype."""
    device, dtype = device_and_dtype(cfg)
    ds = data_mod.load(cfg)
    if not cfg.model.weights:
        net = network.init(cfg, ds)
    else:
        net = load_weights(cfg, cfg.model.weights, ds.d)
        cfg = cfg.replace(**{"model.width": net.m})
    return cfg, ds.to(device, dtype), net.to(device, dtype)


def load_weights(cfg: Config, path, d: int) -> Network:
    """W (m x d) and a (m) from an .npz file."""
    from gradrank.io import load_arrays

    arrays = load_arrays(path, required=("W", "a"))
    W, a = arrays["W"], arrays["a"]
    if W.ndim != 2 or W.shape[1] != d:
        raise InputError(f"{path}: W must have shape (m, {d}) to match the data, got {W.shape}")
    if a.shape != (W.shape[0],):
        raise InputError(f"{path}: a must have shape ({W.shape[0]},), got {a.shape}")
    return network_from_arrays(cfg, W, a)


def network_from_arrays(cfg: Config, W: np.ndarray, a: np.ndarray) -> Network:
    """The paper's network with given W (m x d) and a (m), scaling and activation from the config."""
    from gradrank.twolayer.activations import get

    m = W.shape[0]
    return Network(
        torch.as_tensor(W), torch.as_tensor(a), network.gamma_m(cfg, m), get(cfg.model.activation, cfg.model.leaky_slope)
    )


def analyze(cfg: Config) -> Result:
    """The whole analysis of a resolved config."""
    t = time.perf_counter()
    cfg, ds, net = prepare(cfg)
    return analyze_prepared(cfg, ds, net, {"setup": time.perf_counter() - t})


def analyze_prepared(cfg: Config, ds: Dataset, net: Network, timings: dict | None = None) -> Result:
    """The analysis at given data and weights (on the compute device), sizes and hash added."""
    timings = {} if timings is None else timings
    result = analyze_state(cfg, ds, net, timings)
    finish(result, ds, net)
    return result


def finish(result: Result, ds: Dataset, net: Network) -> None:
    """Add sizes, data facts and the config hash to the metrics."""
    result.metrics = {
        "sizes": {"n": ds.n, "d": ds.d, "m": net.m},
        "data": {
            "source": result.config.data.source,
            "zeta": ds.zeta,
            "nu": ds.info.get("nu"),
            "alpha_fit": ds.info.get("alpha_fit"),
            "alpha_fit_r2": ds.info.get("alpha_fit_r2"),
        },
        **result.metrics,
        "config_hash": result.config.hash(),
    }
