"""The Python API: the same backend as the command line, checked against a numpy reimplementation."""

from __future__ import annotations

import numpy as np
import pytest

import gradrank
from gradrank.studies import analyze as analysis


def test_analyze_with_overrides_is_the_pipeline():
    over = {"data.n": 60, "data.d": 80, "model.width": 100, "model.activation": "tanh"}
    a = gradrank.analyze(overrides=over, seed=3)
    b = analysis.analyze(
        gradrank.api.resolve_config({"seed": 3, "data": {"n": 60, "d": 80}, "model.width": 100, "model.activation": "tanh"})
    )
    assert a.metrics["norms"] == b.metrics["norms"] and a.config.model.activation == "tanh"


def test_decompose_of_own_arrays_against_numpy():
    """G = (gamma/n) Xc^T [(r a^T) o relu'(Xc W^T)], r = f - y, Xc the column-centred X (data.center)."""
    rng = np.random.default_rng(0)
    n, d, m = 50, 40, 60
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    W, a = rng.standard_normal((m, d)) / np.sqrt(d), np.sign(rng.standard_normal(m))
    res = gradrank.decompose(X, y, W, a, overrides={"analysis.top_k": 3})
    Xc = X - X.mean(0)
    gamma = 1 / np.sqrt(m)
    P = Xc @ W.T
    r = gamma * np.maximum(P, 0) @ a - y
    G = gamma / n * Xc.T @ ((r[:, None] * a[None, :]) * (P > 0))
    s = np.linalg.svd(G, compute_uv=False)
    assert res.metrics["norms"]["G"] == pytest.approx(s[0], rel=1e-10)
    assert res.metrics["singular_values"] == pytest.approx(s[:3], rel=1e-8)
    assert res.metrics.sizes.to_dict() == {"n": n, "d": d, "m": m}


def test_bad_api_input_is_an_input_error():
    with pytest.raises(gradrank.api.InputError, match="both W and a"):
        gradrank.decompose(np.ones((5, 3)), W=np.ones((2, 3)))
    with pytest.raises(gradrank.api.InputError, match="config must be"):
        gradrank.analyze(config=42)
