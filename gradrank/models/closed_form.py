"""The closed-form first-layer gradient G = (gamma_m/n) X^T [(r a^T) o sigma'(X W^T)] (Prop. 2.1).

G is kept factored as coef * X^T D with D = (r a^T) o Sigma' (n x m): the exact spectrum and
every decomposition term reuse the factors, and the dense d x m matrix is formed only on demand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradrank.core.activations import Activation
from gradrank.core.factors import Factors
from gradrank.errors import InputError


def output(Z: torch.Tensor, a: torch.Tensor, gamma: float, act: Activation) -> torch.Tensor:
    """f = gamma_m sigma(Z) a (n) from the pre-activations Z = X W^T (n x m): the one forward pass."""
    return gamma * (act.f(Z) @ a)


@dataclass
class Network:
    W: torch.Tensor  # m x d inner weights
    a: torch.Tensor  # m outer weights in {+-1}
    gamma: float  # c/sqrt(m) (NTK) or c/m (mean field)
    act: Activation

    @property
    def m(self) -> int:
        return self.W.shape[0]

    def preactivations(self, X: torch.Tensor) -> torch.Tensor:
        """Z = X W^T (n x m)."""
        return X @ self.W.T

    def output(self, Z: torch.Tensor) -> torch.Tensor:
        """f = gamma_m sigma(Z) a from the pre-activations (`output`)."""
        return output(Z, self.a, self.gamma, self.act)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.output(self.preactivations(X))

    def to(self, device, dtype) -> Network:
        return Network(self.W.to(device=device, dtype=dtype), self.a.to(device=device, dtype=dtype), self.gamma, self.act)


def loss_and_residue(kind: str, f: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss l(f, y) and residue r = dl/df, in numerically stable forms."""
    if kind == "mse":
        r = f - y
        return 0.5 * r * r, r
    # logistic, y in {+-1}: l = log(1 + e^{-yf}) = softplus(-yf); r = -y sigmoid(-yf)
    return F.softplus(-y * f), -y * torch.sigmoid(-y * f)


@dataclass
class Gradient:
    """The loss part of G in factored form, plus what the decomposition needs."""

    X: torch.Tensor  # n x d, the inputs the gradient was taken at
    r: torch.Tensor  # residue, n
    Sp: torch.Tensor  # Sigma' = sigma'(X W^T), n x m
    D: torch.Tensor  # (r a^T) o Sigma', n x m
    coef: float  # gamma_m / n
    loss: float  # data loss (1/n) sum l

    def dense(self) -> torch.Tensor:
        return self.coef * (self.X.T @ self.D)

    def mv(self, V: torch.Tensor) -> torch.Tensor:
        """G V for a thin V (m x k), without forming G."""
        return self.coef * (self.X.T @ (self.D @ V))

    def rmv(self, U: torch.Tensor) -> torch.Tensor:
        """G^T U for a thin U (d x k)."""
        return self.coef * (self.D.T @ (self.X @ U))

    def factors(self, net: Network) -> Factors:
        """The engine's currency (core/factors.py): G = gamma_m X^T D / n, D = diag(r) Sigma' diag(a)."""
        return Factors(self.X, self.D, self.r, self.Sp, net.a, self.X.shape[0], net.gamma)

    def operator(self, reg: torch.Tensor | None = None):
        """(V -> G V, U -> G^T U) for G = this loss gradient + reg (a dense penalty, or None)."""
        if reg is None:
            return self.mv, self.rmv
        return (lambda V: self.mv(V) + reg @ V), (lambda U: self.rmv(U) + reg.T @ U)


def gradient(net: Network, X: torch.Tensor, y: torch.Tensor, loss_kind: str) -> Gradient:
    Z = net.preactivations(X)
    f = net.output(Z)
    ell, r = loss_and_residue(loss_kind, f, y)
    Sp = net.act.d1(Z)
    D = (Sp * net.a).mul_(r[:, None])
    coef = net.gamma / X.shape[0]
    fro_X = _fro(X)  # huge data overflow mu and the spike terms even when G is small
    bound = max(fro_X, coef * fro_X * _fro(D))
    if not bound < _limit(X):
        norms = {p: _fro(A) for p, A in (("X", X), ("y", y), ("f", f))}
        part = next((p for p, v in norms.items() if not v < _limit(X)), None)  # too large itself, else the largest
        part = part or max(norms, key=lambda p: norms[p] if math.isfinite(norms[p]) else math.inf)
        _check_range(bound, X, part)
    return Gradient(X, r, Sp, D, coef, float(ell.mean()))


class RangeError(InputError):
    """A gradient beyond the dtype's range; `part` says what is too large: the data X, the targets
    y, the network output f, or only their product G (the caller names the config key or file)."""

    def __init__(self, message: str, part: str):
        super().__init__(message)
        self.part = part


def _limit(X: torch.Tensor) -> float:
    return 1e-2 * math.sqrt(torch.finfo(X.dtype).max)


def _fro(A: torch.Tensor) -> float:
    """Frobenius norm as a Python float, without overflow in the dtype: one reduction, and a scaled
    second one only when the sum of squares overflowed (or the entries are not finite)."""
    if not A.numel():
        return 0.0
    fro = float(torch.linalg.vector_norm(A))
    if math.isfinite(fro):
        return fro
    top = float(torch.linalg.vector_norm(A, math.inf))
    return top * float(torch.linalg.vector_norm(A / top)) if 0 < top < math.inf else top


_PARTS = {"X": "the data X", "y": "the target vector y", "f": "the network output f", "G": "the gradient"}


def _check_range(bound: float, X: torch.Tensor, part: str = "G") -> None:
    """Refuse data or a gradient (norm bound ||G||_F <= coef ||X||_F ||D||_F) that is non-finite or so
    large that squares (Gram matrices, mu's scales) would overflow: an error, not a NaN spectrum."""
    if not bound < _limit(X):
        dtype = str(X.dtype).removeprefix("torch.")
        raise RangeError(
            f"{_PARTS[part]} is too large for compute.dtype = {dtype} (gradient norm up to {bound:.1e}, "
            f"max |X| = {float(X.abs().max()):.1e})" + (", use float64" if dtype != "float64" else ""),
            part,
        )
