"""Built-in real data sets that ship with installed packages (nothing is downloaded).

- digits:  scikit-learn's bundled 8x8 handwritten digits (1797 x 64).
- mnist1d: MNIST-1D generated procedurally by `mnist1d.data.make_dataset` with its default
           arguments (5000 x 40); `get_dataset` is never called because it downloads.
- patches: gray p x p patches cut at seeded random places from scikit-learn's two bundled
           sample photographs (china.jpg, flower.jpg); the label says which photograph.
Labels are +-1: 1[label == data.digits_class], else label parity (digits, mnist1d).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from gradrank.config import DataConfig
from gradrank.errors import InputError
from gradrank.rng import generator


def _labels(dc: DataConfig, labels: np.ndarray) -> np.ndarray:
    k = dc.digits_class
    return np.where(labels == k, 1.0, -1.0) if k >= 0 else np.where(labels % 2 == 0, 1.0, -1.0)


def _split(dc: DataConfig, seed: int, X: np.ndarray, y: np.ndarray):
    """A seeded permutation: the first data.n rows train, the next data.n_test rows test."""

    n, n_test = dc.n, dc.n_test
    if n + n_test > X.shape[0]:
        raise InputError(f"config key 'data.n' + 'data.n_test' = {n + n_test} exceeds the {X.shape[0]} samples of {dc.source}")
    perm = torch.randperm(X.shape[0], generator=generator(seed, "split")).numpy()
    tr, te = perm[:n], perm[n : n + n_test]
    return X[tr], y[tr], (X[te] if n_test else None), (y[te] if n_test else None)


def digits(dc: DataConfig, seed: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split(dc, seed, bunch.data.astype(np.float64), _labels(dc, bunch.target))


@functools.lru_cache(maxsize=1)
def _mnist1d_pool() -> tuple[np.ndarray, np.ndarray]:
    """All 5000 MNIST-1D signals and labels (its own train/test split merged; ours is seeded)."""
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        ds = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return np.concatenate([ds["x"], ds["x_test"]]).astype(np.float64), np.concatenate([ds["y"], ds["y_test"]])


def mnist1d(dc: DataConfig, seed: int):
    X, labels = _mnist1d_pool()
    return _split(dc, seed, X, _labels(dc, labels))


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[np.ndarray, ...]:
    """scikit-learn's two bundled sample photographs in gray, values in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return tuple(img.astype(np.float64).mean(axis=2) / 255.0 for img in load_sample_images().images)


def patches(dc: DataConfig, seed: int):
    """data.n + data.n_test gray p x p patches, half from each photograph, at seeded places."""

    p = dc.patch_size
    total = dc.n + dc.n_test
    g = generator(seed, "patches")
    X, y = [], []
    for k, gray in enumerate(_photographs()):
        h, w = gray.shape
        count = total // 2 + (total % 2 if k == 0 else 0)
        rows = torch.randint(0, h - p + 1, (count,), generator=g).numpy()
        cols = torch.randint(0, w - p + 1, (count,), generator=g).numpy()
        X += [gray[i : i + p, j : j + p].ravel() for i, j in zip(rows, cols)]
        y += [1.0 if k == 0 else -1.0] * count
    X, y = np.stack(X), np.asarray(y)
    perm = torch.randperm(total, generator=g).numpy()
    X, y = X[perm], y[perm]
    n = dc.n
    return X[:n], y[:n], (X[n:] if dc.n_test else None), (y[n:] if dc.n_test else None)


LOADERS = {"digits": digits, "mnist1d": mnist1d, "patches": patches}


def load(dc: DataConfig, seed: int):
    """(X, y, X_test, y_test) for data.source, y in {+-1}, drawn from `seed`'s streams."""
    if dc.source not in LOADERS:
        raise InputError(f"config key 'data.source' = {dc.source} is not a built-in data set")
    return LOADERS[dc.source](dc, seed)
