"""Built-in real data sets that ship with installed packages (nothing is downloaded)."""

from __future__ import annotations

import numpy as np

from gradrank.config import Config
from gradrank.data import generator
from gradrank.errors import InputError


def _split(cfg: Config, X: np.ndarray, labels: np.ndarray):
    """A seeded permutation: the first data.n rows train, the next data.n_test rows test."""
    n, n_test = cfg.data.n, cfg.data.n_test
    if n + n_test > X.shape[0]:
        raise InputError(f"config key 'data.n' + 'data.n_test' = {n + n_test} exceeds the {X.shape[0]} samples of {cfg.data.source}")
    perm = np.asarray(__import__("torch").randperm(X.shape[0], generator=generator(cfg.seed, "train")))
    k = cfg.data.digits_class
    y = np.where(labels == k, 1.0, -1.0) if k >= 0 else np.where(labels % 2 == 0, 1.0, -1.0)
    tr, te = perm[:n], perm[n : n + n_test]
    return X[tr], y[tr], (X[te] if n_test else None), (y[te] if n_test else None)


def digits(cfg: Config):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split(cfg, bunch.data.astype(np.float64), bunch.target)


def load(cfg: Config):
    """(X, y, X_test, y_test) for data.source; y = +-1 (class = data.digits_class, else label parity)."""
    loaders = {"digits": digits}
    if cfg.data.source not in loaders:
        raise InputError(f"config key 'data.source' = {cfg.data.source} is not available")
    return loaders[cfg.data.source](cfg)
