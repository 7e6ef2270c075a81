"""The analysis of the paper's two-layer network: config -> data -> network -> closed-form factors
(Prop. 2.1 of arXiv 2510.01303) -> the engine (core/engine.py) -> metrics.

Every command on the two-layer network (analyze, decompose, train, sweep) goes through
`analyze_state`; the math lives in the engine, which `layers` shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gradrank.config import ComputeConfig, Config, ModelConfig
from gradrank.config.resources import blame
from gradrank.core import engine
from gradrank.core.activations import get
from gradrank.core.records import DataFacts, Metrics, Sizes
from gradrank.core.spike import Spike
from gradrank.core.split import Terms
from gradrank.core.trust import signal, trust
from gradrank.data import spiked as data_mod
from gradrank.data.spiked import Dataset
from gradrank.errors import InputError
from gradrank.io import load_arrays
from gradrank.models import regularizers
from gradrank.models import twolayer as network
from gradrank.models.closed_form import RangeError, _fro, gradient
from gradrank.models.mu import compute_mu
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
    out = engine.run(grad.factors(net), Spike(ds.q, ds.z, ds.zeta, ds.X_B), acfg, mu, mu_err, reg)
    lap("engine")
    measured, spec_G, spec_E, dec = out.measures, out.spec_G, out.spec_E, out.dec
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
        **measured.fields(),
        loss=grad.loss + regularizers.penalty_value(cfg.regularizer, net, clean.X, clean.y, cfg.loss.kind),
        trust=trust(
            acfg,
            cfg.compute.dtype,
            measured.norms,
            measured.singular_values,
            measured.identity_error,
            measured.spectral_residual,
            mu_err,
            notes(cfg, ds),
            signal(
                cfg.compute.dtype,
                measured.singular_values,
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
