"""Data: the spiked model X = X_B + zeta z q^T (arXiv 2510.01303; docs/model.md §2), targets, and user/real data.

Everything is drawn on the CPU in float64 from generators derived from the one seed, then
cast, so the same seed gives the same data on every device and dtype. The stage reads the config's
`data` section, the seed and the loss kind (logistic labels are sign(y)), each passed explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gradrank.config import DataConfig
from gradrank.core import spike as spike_rule
from gradrank.core.activations import get
from gradrank.core.fits import loglog_slope
from gradrank.core.floors import NORM_FLOOR
from gradrank.core.spectra import data_spectrum
from gradrank.data import real as realdata
from gradrank.errors import InputError
from gradrank.io import load_arrays
from gradrank.rng import generator


# Independent random streams derived from the one seed: changing the width never changes the data.
@dataclass
class Dataset:
    """X = X_B + zeta z q^T exactly; `eigenvalues`/`basis` describe the bulk covariance."""

    X: torch.Tensor
    y: torch.Tensor
    X_B: torch.Tensor
    q: torch.Tensor
    z: torch.Tensor
    zeta: float
    eigenvalues: torch.Tensor  # population bulk spectrum (spiked) or empirical one (real data)
    basis: torch.Tensor | None = None  # eigenbasis V of the bulk covariance (None = identity)
    X_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    population: bool = True  # eigenvalues/basis are the true covariance (so population mu is exact)
    info: dict = field(default_factory=dict)
    # the target's index directions (rows; CPU float64 as drawn, shared by train and test targets);
    # None for pure noise or given labels, where no index model exists
    index_directions: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def bulk_quadratic(self, W: torch.Tensor) -> torch.Tensor:
        """w_j^T Sigma_hat w_j for every row of W."""
        Wb = W if self.basis is None else W @ self.basis
        return (Wb * Wb) @ self.eigenvalues.to(W)

    def to(self, device, dtype) -> "Dataset":
        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return Dataset(
            mv(self.X),
            mv(self.y),
            mv(self.X_B),
            mv(self.q),
            mv(self.z),
            self.zeta,
            mv(self.eigenvalues),
            mv(self.basis),
            mv(self.X_test),
            mv(self.y_test),
            self.population,
            dict(self.info),
            self.index_directions,  # kept as drawn: readers cast it where they use it
        )


# ---------------------------------------------------------------------------- spiked model


def bulk_spectrum(dc: DataConfig) -> torch.Tensor:
    """lambda_k = k^-alpha, optionally rescaled to mean 1 (trace d)."""
    lam = torch.arange(1, dc.d + 1, dtype=torch.float64) ** (-dc.alpha)
    if dc.normalize == "trace":
        lam = lam * (dc.d / lam.sum())
    return lam


def _unit_rows(A: torch.Tensor) -> torch.Tensor:
    return A / A.norm(dim=-1, keepdim=True)


def spiked(dc: DataConfig, seed: int, loss: str) -> Dataset:
    """Draw (X, y) from the spiked model (docs/model.md, section 2)."""
    n, d = dc.n, dc.d
    lam = bulk_spectrum(dc)
    g_bulk, g_spike = generator(seed, "bulk"), generator(seed, "spike")
    V = None
    if dc.basis == "random":
        V, _ = torch.linalg.qr(torch.randn(d, d, generator=g_bulk, dtype=torch.float64))
    if dc.spike == "eigvec":
        q = torch.zeros(d, dtype=torch.float64)
        q[dc.spike_index] = 1.0
        q = q if V is None else V @ q
    else:
        q = _unit_rows(torch.randn(d, generator=g_spike, dtype=torch.float64))
    zeta = dc.zeta if dc.zeta is not None else float(n) ** dc.nu
    X_B, z = _draw(n, lam, V, dc.latent, g_bulk, g_spike)
    X = X_B + zeta * torch.outer(z, q)
    ds = Dataset(X, torch.empty(0), X_B, q, z, zeta, lam, V)
    ds.info.update(nu=dc.nu if dc.zeta is None else math.log(max(zeta, NORM_FLOOR)) / math.log(max(n, 2)))
    ds.y = make_targets(dc, seed, loss, ds, X, X_B)
    if dc.n_test:
        ds.X_test, ds.y_test = fresh(dc, seed, loss, ds, dc.n_test, "test", "test_noise")
    return ds


def fresh(
    dc: DataConfig, seed: int, loss: str, ds: Dataset, n: int, stream: str, noise_stream: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """n new samples (X, y) of ds's spiked model (same q, zeta, bulk and target), drawn from the
    named streams `stream` (inputs) and `noise_stream` (label noise)."""
    g = generator(seed, stream)
    X_B, z = _draw(n, ds.eigenvalues, ds.basis, dc.latent, g, g)
    X = X_B + ds.zeta * torch.outer(z, ds.q)
    return X, make_targets(dc, seed, loss, ds, X, X_B, noise_stream)


def _draw(n, lam, V, latent, g_bulk, g_spike):
    G = torch.randn(n, lam.numel(), generator=g_bulk, dtype=torch.float64) * lam.sqrt()
    X_B = G if V is None else G @ V.T
    if latent == "rademacher":
        z = torch.randint(0, 2, (n,), generator=g_spike, dtype=torch.float64) * 2 - 1
    else:
        z = torch.randn(n, generator=g_spike, dtype=torch.float64)
    return X_B, z


# ---------------------------------------------------------------------------- targets

_LINKS = {  # name -> (number of indices k, g(u) with u of shape n x k)
    "triple": (3, lambda u: torch.tanh(u[:, 0]) + (u[:, 1] ** 2 - 1) + u[:, 0] * u[:, 2]),
    "pair": (2, lambda u: u[:, 0] * u[:, 1]),
    "linear": (1, lambda u: u[:, 0]),
    "tanh": (1, lambda u: torch.tanh(u[:, 0])),
    "relu": (1, lambda u: torch.relu(u[:, 0])),
    "he2": (1, lambda u: u[:, 0] ** 2 - 1),
    "he3": (1, lambda u: u[:, 0] ** 3 - 3 * u[:, 0]),
    "sign": (1, lambda u: torch.sign(u[:, 0])),
}


def make_targets(
    dc: DataConfig, seed: int, loss: str, ds: Dataset, X: torch.Tensor, X_B: torch.Tensor, noise_stream: str = "noise"
) -> torch.Tensor:
    """y = g(beta_1^T x, ..., beta_k^T x) (or a teacher net, or noise), plus label noise; sets
    ds.index_directions to the beta's.

    Indices are standardised to unit population variance. With index_sees_spike = false
    they read the bulk X_B only. For the logistic loss the labels are sign(y) in {+-1}.
    """
    g = generator(seed, "target")  # directions: the same for train and test
    g_noise = generator(seed, noise_stream)
    inputs = X if dc.index_sees_spike else X_B
    n, d = X.shape
    if dc.target == "noise":
        y = torch.randn(n, generator=g_noise, dtype=torch.float64)
    else:
        B = _directions(dc, d, g)
        ds.index_directions = B
        u = (inputs @ B.T) / _index_scale(ds, B, dc.index_sees_spike)
        if dc.target == "teacher":
            c = torch.randint(0, 2, (dc.teacher_width,), generator=g, dtype=torch.float64) * 2 - 1
            y = get(dc.teacher_activation).f(u) @ c / math.sqrt(dc.teacher_width)
        else:
            y = _LINKS[_link(dc)][1](u)
    if dc.label_noise:
        y = y + dc.label_noise * torch.randn(n, generator=g_noise, dtype=torch.float64)
    if loss == "logistic":
        y = torch.where(y >= 0, 1.0, -1.0).to(torch.float64)
    return y


def _link(dc: DataConfig) -> str:
    return {"linear": "linear"}.get(dc.target, dc.link)


def _directions(dc: DataConfig, d: int, g: torch.Generator) -> torch.Tensor:
    """The target's index directions (k x d): orthonormal rows for index models, unit teacher rows."""
    if dc.target == "teacher":
        return _unit_rows(torch.randn(dc.teacher_width, d, generator=g, dtype=torch.float64))
    link = _link(dc)
    k = _LINKS[link][0]
    if dc.target == "single_index" and k != 1:
        raise InputError(f"config key 'data.link' = {link} has {k} indices; data.target = single_index needs one")
    B, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    if k > d:
        raise InputError(f"config key 'data.link' = {link} needs d >= {k}")
    return B.T[:k]


def _index_scale(ds: Dataset, B: torch.Tensor, sees_spike: bool) -> torch.Tensor:
    """Population std of each index beta^T x (or beta^T x_B); for given data, where only the
    empirical spectrum is known (not its basis), the empirical std over the training rows."""
    if not ds.population:
        return ((ds.X if sees_spike else ds.X_B) @ B.T).pow(2).mean(0).clamp_min(NORM_FLOOR).sqrt()
    var = ds.bulk_quadratic(B)
    if sees_spike:
        var = var + (ds.zeta * (B @ ds.q)) ** 2
    return var.clamp_min(NORM_FLOOR).sqrt()


# ---------------------------------------------------------------------------- given data


def from_matrix(
    dc: DataConfig,
    seed: int,
    loss: str,
    X: np.ndarray,
    y: np.ndarray | None,
    q: np.ndarray | None = None,
    X_test=None,
    y_test=None,
    name: str = "data",
) -> Dataset:
    """Spike extraction for given X (docs/model.md, section 2, real data) by the one spike rule
    (core/spike.py): q = given or the principal direction of the centred X, zeta z = X_c q with z of
    unit empirical variance, X_B = X - zeta z q^T (data.center = false: X as given, uncentred)."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    mean = X.mean(0) if dc.center else torch.zeros(X.shape[1], dtype=torch.float64)
    raw = float(X.abs().max()) if X.numel() else 0.0
    centred = float((X - mean).abs().max()) if X.numel() else 0.0
    rounding = raw > 0 and centred <= 16 * X.shape[0] * torch.finfo(torch.float64).eps * raw  # identical rows
    scale = X.std(0).clamp_min(1e-12) if dc.standardize else torch.ones(X.shape[1], dtype=torch.float64)
    prep = lambda A: (A - mean) / scale  # noqa: E731  (the same map for train and test)
    X = prep(X)
    if X_test is not None:
        X_test = prep(torch.as_tensor(np.asarray(X_test, dtype=np.float64)))
    if dc.embed_dim:
        X, X_test = _embed(dc.embed_dim, seed, X, X_test)
    n, d = X.shape
    if q is not None:
        q = torch.as_tensor(np.asarray(q, dtype=np.float64))
        if q.shape != (d,) or dc.embed_dim:
            raise InputError(f"{name}: q must have shape ({d},) and cannot be combined with data.embed_dim")
        if float(q.norm()) == 0.0:
            raise InputError(f"{name}: q is the zero vector")
    # the one spike rule (core/spike.py): q given or the principal direction, zeta z = X_c q, X_B = X - zeta z q^T;
    # its centring is data.center's, done above (X_c = X)
    sp = spike_rule.principal(X, False) if q is None else spike_rule.along(X, q / q.norm(), False)
    q, z, zeta, X_B = sp.q, sp.z, sp.zeta, sp.H_B
    eig = data_spectrum(X_B, 0).values.pow(2) / n
    alpha_fit, alpha_fit_r2 = bulk_exponent(eig)
    info = {
        "nu": math.log(zeta) / math.log(n) if zeta > 0 and n > 1 else float("nan"),
        "alpha_fit": alpha_fit,
        "alpha_fit_r2": alpha_fit_r2,
        "source": name,
    }
    if rounding:
        info["rounding"] = "data.center left only rounding error: the rows of X are identical up to rounding"
    ds = Dataset(X, torch.empty(0), X_B, q, z, zeta, eig, None, X_test, None, population=False, info=info)
    ds.y = torch.as_tensor(np.asarray(y, dtype=np.float64)) if y is not None else make_targets(dc, seed, loss, ds, X, X_B)
    if y is None:  # said in the terminal and the report (analysis.trust)
        ds.info["synthetic_targets"] = (
            dc.target if dc.target not in ("single_index", "multi_index") else f"{dc.target} ({dc.link})"
        )
    if y_test is not None:
        ds.y_test = torch.as_tensor(np.asarray(y_test, dtype=np.float64))
    elif X_test is not None:
        ds.y_test = make_targets(dc, seed, loss, ds, X_test, X_test - torch.outer(X_test @ q, q), "test_noise")
    if loss == "logistic":
        for t in (ds.y, ds.y_test):
            if t is not None and not bool(((t == 1) | (t == -1)).all()):
                raise InputError(f"{name}: logistic loss needs labels y in {{-1, +1}}")
    return ds


def _embed(dim: int, seed: int, X: torch.Tensor, X_test):
    """Random-feature embedding x -> tanh(F x / sqrt(d)) into data.embed_dim dimensions, re-centred."""
    g = generator(seed, "embed")
    F = torch.randn(dim, X.shape[1], generator=g, dtype=torch.float64) / math.sqrt(X.shape[1])
    E = torch.tanh(X @ F.T)
    mean = E.mean(0)
    return E - mean, None if X_test is None else torch.tanh(X_test @ F.T) - mean


def bulk_exponent(eigenvalues: torch.Tensor) -> tuple[float, float]:
    """(alpha, R^2) of lambda_k ~ k^-alpha, the one log-log fit (core/fits.py) over the
    non-negligible eigenvalues (docs/model.md, real data)."""
    lam = eigenvalues[eigenvalues > eigenvalues.max() * 1e-10].double().sort(descending=True).values
    lam = lam[: max(3, int(0.9 * lam.numel()))]  # the last eigenvalues of a finite sample fall off a cliff
    fit = loglog_slope(np.arange(1, lam.numel() + 1), lam.numpy())
    return (float("nan"), float("nan")) if fit is None else (-fit[0], fit[1])


def check_shapes(p: Path, shapes: dict[str, tuple]) -> None:
    """The shapes a data file's arrays declare agree (X n x d, y (n,), q (d,), X_test (*, d), y_test
    (n_test,)): checked from the headers, before any array is read."""
    X = shapes["X"]
    if len(X) != 2 or X[0] < 2 or X[1] < 1:
        raise InputError(f"{p}: X must be a 2-d array with at least 2 rows, got shape {X}")
    n, d = X
    for key, shape in (("y", (n,)), ("q", (d,))):
        if key in shapes and tuple(shapes[key]) != shape:
            raise InputError(f"{p}: {key} must have shape {shape}, got {tuple(shapes[key])}")
    if ("X_test" in shapes) != ("y_test" in shapes) and "y" in shapes:
        raise InputError(f"{p}: X_test and y_test must come together")
    if "X_test" in shapes:
        Xt = tuple(shapes["X_test"])
        if len(Xt) != 2 or Xt[1] != d:
            raise InputError(f"{p}: X_test must have shape (*, {d}), got {Xt}")
        if "y_test" in shapes and tuple(shapes["y_test"]) != (Xt[0],):
            raise InputError(f"{p}: y_test must have shape ({Xt[0]},), got {tuple(shapes['y_test'])}")


def load_file(dc: DataConfig, seed: int, loss: str, path: str) -> Dataset:
    """A user data file: .npz (X, y, optional q, X_test, y_test), .npy (X only) or .csv (X only)."""

    p = Path(path)
    arrays = load_arrays(p, required=("X",), optional=("y", "q", "X_test", "y_test"), check=lambda s: check_shapes(p, s))
    X = arrays["X"]
    return from_matrix(
        dc, seed, loss, X, arrays.get("y"), arrays.get("q"), arrays.get("X_test"), arrays.get("y_test"), name=str(p)
    )


def load(dc: DataConfig, seed: int, loss: str) -> Dataset:
    """The data set the `data` section describes (CPU, float64), drawn from `seed`'s streams, with
    labels sign(y) for the logistic loss (`loss`: the config's loss.kind)."""
    src = dc.source
    if src == "spiked":
        return spiked(dc, seed, loss)
    if src == "file":
        return load_file(dc, seed, loss, dc.path)

    X, y, X_test, y_test = realdata.load(dc, seed)
    return from_matrix(dc, seed, loss, X, y, None, X_test, y_test, name=src)
