"""Gaps of the mutation audit (docs/testing.md): every consumer of a named random stream draws from its
own stream (reimplemented draw by draw), changing one part of a config leaves the other draws alone,
the data model against a numpy reimplementation, and the spectral routes in the window where the
Gram route hands over to the SVD route (top values 1e-8 .. 1e-4 of s_1) against a dense SVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradrank import config
from gradrank.core import spectra as spectral
from gradrank.data import spiked as data
from gradrank.models import regularizers
from gradrank.rng import generator
from gradrank.studies import analyze as analysis
from gradrank.studies import train as train

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*sets, seed=5):
    return config.load(sets=["data.n=30", "data.d=20", "model.width=25", *sets], seed=seed)


def _randn(seed, stream, *shape, index=()):
    return torch.randn(*shape, generator=generator(seed, stream, *index), dtype=torch.float64)


# ---------------------------------------------------------------------------- streams


def test_each_consumer_draws_from_its_own_stream():
    cfg = _cfg("data.n_test=12", "data.label_noise=0.5", "data.alpha=0.5", "regularizer.input_noise=0.2")
    cfg, ds, net = analysis.prepare(cfg)
    n, d, m, seed = 30, 20, 25, 5
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** -0.5
    W = _randn(seed, "weights", m, d)
    assert torch.equal(net.W, W / W.norm(dim=1, keepdim=True))
    a = torch.randint(0, 2, (m,), generator=generator(seed, "outer"), dtype=torch.float64) * 2 - 1
    assert torch.equal(net.a, a)
    assert torch.equal(ds.X_B, _randn(seed, "bulk", n, d) * lam.sqrt())
    g = generator(seed, "spike")
    q = torch.randn(d, generator=g, dtype=torch.float64)
    z = torch.randn(n, generator=g, dtype=torch.float64)
    assert torch.equal(ds.q, q / q.norm()) and torch.equal(ds.z, z)
    g = generator(seed, "test")
    Xt_B = torch.randn(12, d, generator=g, dtype=torch.float64) * lam.sqrt()
    zt = torch.randn(12, generator=g, dtype=torch.float64)
    assert torch.allclose(ds.X_test, Xt_B + ds.zeta * torch.outer(zt, ds.q), rtol=0, atol=1e-14)
    # targets: triple-index link on the bulk, directions from "target", label noise from "noise"/"test_noise"
    B = torch.linalg.qr(_randn(seed, "target", d, 3))[0].T
    for X_B, y, stream in ((ds.X_B, ds.y, "noise"), (Xt_B, ds.y_test, "test_noise")):
        u = (X_B @ B.T) / ((B * B) @ lam).sqrt()
        clean = torch.tanh(u[:, 0]) + u[:, 1] ** 2 - 1 + u[:, 0] * u[:, 2]
        assert torch.allclose(y, clean + 0.5 * _randn(seed, stream, X_B.shape[0]), rtol=1e-12, atol=1e-12), stream
    # input noise: draw t from ("input_noise", t)
    for t in (0, 3):
        noisy = regularizers.noisy_data(cfg.regularizer, cfg.seed, ds, t)
        assert torch.allclose(noisy.X - ds.X, 0.2 * _randn(seed, "input_noise", n, d, index=(t,)), rtol=0, atol=1e-14)
    # training's tracked start block
    tracker = train._Tracker(2, 6, d, False, 1e-6, seed, ds.X)
    assert torch.equal(tracker.block, _randn(seed, "tracking", d, 6))


def test_real_data_split_and_embedding_streams():
    from gradrank.data import real as realdata

    cfg = config.load(sets=["data.source=digits", "data.n=50", "data.n_test=20", "data.embed_dim=16"], seed=2)
    X, y, Xt, yt = realdata.load(cfg.data, cfg.seed)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    perm = torch.randperm(bunch.data.shape[0], generator=generator(2, "split")).numpy()
    assert np.array_equal(X, bunch.data[perm[:50]]) and np.array_equal(Xt, bunch.data[perm[50:70]])
    ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
    Xc = X - X.mean(0)
    F = torch.randn(16, 64, generator=generator(2, "embed"), dtype=torch.float64).numpy() / 8.0
    E = np.tanh(Xc @ F.T)
    assert np.allclose(ds.X.numpy(), E - E.mean(0), atol=1e-12)
    pc = config.load(sets=["data.source=patches", "data.n=6", "data.n_test=0", "data.patch_size=4"], seed=2)
    g = generator(2, "patches")
    h, w = realdata._photographs()[0].shape
    rows = torch.randint(0, h - 3, (3,), generator=g).numpy()
    cols = torch.randint(0, w - 3, (3,), generator=g).numpy()
    Xp = realdata.patches(pc.data, pc.seed)[0]
    first = {tuple(realdata._photographs()[0][i : i + 4, j : j + 4].ravel()) for i, j in zip(rows, cols)}
    assert first == {tuple(x) for x, lab in zip(Xp, realdata.patches(pc.data, pc.seed)[1]) if lab == 1.0}


@pytest.mark.parametrize(
    "change,same,different",
    [
        ({"model.width": 30}, ("X", "y", "X_test", "y_test"), ("W",)),
        ({"data.n_test": 20}, ("X", "y", "W", "a"), ("X_test",)),
        ({"data.label_noise": 0.7}, ("X", "W", "a", "X_test"), ("y", "y_test")),
        ({"model.outer": "balanced"}, ("X", "y", "W", "X_test"), ("a",)),
        ({"regularizer.input_noise": 0.3}, ("X", "y", "W", "a", "X_test", "y_test"), ()),
        ({"train.optimizer": "sgd", "train.batch_size": 7}, ("X", "y", "W", "a", "X_test", "y_test"), ()),
        ({"data.spike": "eigvec"}, ("X_B", "W", "a"), ("q",)),
    ],
)
def test_changing_one_part_leaves_the_other_draws(change, same, different):
    base = _cfg("data.n_test=10", "data.label_noise=0.2")
    other = base.replace(**change)

    def parts(cfg):
        _, ds, net = analysis.prepare(cfg)
        return {"X": ds.X, "X_B": ds.X_B, "q": ds.q, "y": ds.y, "X_test": ds.X_test, "y_test": ds.y_test, "W": net.W, "a": net.a}

    pa, pb = parts(base), parts(other)
    for key in same:
        assert torch.equal(pa[key], pb[key]), key
    for key in different:
        assert pa[key].shape != pb[key].shape or not torch.equal(pa[key], pb[key]), key


# ---------------------------------------------------------------------------- data model


def test_spiked_data_against_numpy():
    """X = X_B + zeta z q^T with zeta = n^nu, lambda_k = k^-alpha (trace-normalised on request), and the
    triple-index target standardised to unit population variance (the index sees the spike here)."""
    cfg = _cfg("data.alpha=1.5", "data.normalize=trace", "data.nu=0.6", "data.index_sees_spike=true", "data.basis=random")
    ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
    lam = np.arange(1, 21) ** -1.5
    lam = lam * 20 / lam.sum()
    assert np.allclose(ds.eigenvalues.numpy(), lam, rtol=1e-13)
    assert ds.zeta == pytest.approx(30**0.6, rel=1e-14)
    assert np.allclose(ds.X.numpy(), ds.X_B.numpy() + ds.zeta * np.outer(ds.z.numpy(), ds.q.numpy()), atol=1e-13)
    V = ds.basis.numpy()
    assert np.allclose(V.T @ V, np.eye(20), atol=1e-12)
    Sigma = V @ np.diag(lam) @ V.T + ds.zeta**2 * np.outer(ds.q.numpy(), ds.q.numpy())  # population covariance of x
    B = torch.linalg.qr(_randn(5, "target", 20, 3))[0].T.numpy()
    u = (ds.X.numpy() @ B.T) / np.sqrt(np.diag(B @ Sigma @ B.T))
    assert np.allclose(ds.y.numpy(), np.tanh(u[:, 0]) + u[:, 1] ** 2 - 1 + u[:, 0] * u[:, 2], atol=1e-10)
    assert np.allclose(ds.index_directions.numpy(), B, rtol=0, atol=1e-15)  # the directions the targets read
    assert ds.bulk_quadratic(torch.eye(20, dtype=torch.float64)[:3]).numpy() == pytest.approx(np.diag(V @ np.diag(lam) @ V.T)[:3])


def test_given_data_spike_extraction_against_numpy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 12)) @ np.diag(np.arange(1, 13) ** -0.7) + 3.0
    cfg = config.Config()  # data.center = true
    ds = data.from_matrix(cfg.data, cfg.seed, cfg.loss.kind, X, rng.standard_normal(80))
    Xc = X - X.mean(0)
    q = np.linalg.svd(Xc, full_matrices=False)[2][0]
    assert abs(ds.q.numpy() @ q) == pytest.approx(1.0, abs=1e-12)
    zeta = np.sqrt(((Xc @ q) ** 2).mean())
    assert ds.zeta == pytest.approx(zeta, rel=1e-12)
    assert np.allclose(ds.X_B.numpy(), Xc - np.outer(Xc @ q, q), atol=1e-12)
    assert np.allclose(ds.z.numpy() ** 2, (Xc @ q / zeta) ** 2, atol=1e-12) and ds.z.pow(2).mean() == pytest.approx(1.0)
    eig = np.linalg.svd(Xc - np.outer(Xc @ q, q), compute_uv=False) ** 2 / 80
    assert np.allclose(ds.eigenvalues.numpy(), eig, rtol=1e-10, atol=1e-14)
    assert ds.info["nu"] == pytest.approx(math.log(zeta) / math.log(80), rel=1e-12)
    lam = np.sort(eig[eig > eig.max() * 1e-10])[::-1]
    lam = lam[: max(3, int(0.9 * lam.size))]
    slope, _ = np.polyfit(np.log(np.arange(1, lam.size + 1)), np.log(lam), 1)
    assert ds.info["alpha_fit"] == pytest.approx(-slope, rel=1e-9)


# ---------------------------------------------------------------------------- the spectral window


def _known(n, d, m, s, seed=0, dtype=torch.float64):
    """L (n x d), R (n x m) with L^T R = U diag(s) V^T exactly known (orthonormal U, V)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))[0]
    C = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]  # L = C U^T, R = C diag(s) V^T
    L, R = C @ U.T, C @ torch.diag(s) @ V.T
    return L.to(dtype), R.to(dtype), U, V


WINDOW = torch.tensor([1.0, 0.3, 1e-4, 3e-5, 1e-6, 1e-7, 1e-8, 0.0, 0.0, 0.0], dtype=torch.float64)
GAP = torch.tensor([1.0, 0.3, 1e-6, 1e-8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # s_k alone in the window


@pytest.mark.parametrize("k,WINDOW", [(2, WINDOW), (3, WINDOW), (5, WINDOW), (7, WINDOW), (3, GAP), (4, GAP)])
def test_top_values_in_the_fallback_window_against_a_dense_svd(k, WINDOW):
    """Top-k values down to 1e-8 s_1 (the Gram resolves ~1e-8 s_1 normwise only): every reported value and
    vector is right to a relative ~1e-7, as a dense SVD of the formed matrix gives them."""
    L, R, U, V = _known(10, 40, 30, WINDOW)
    A = L.T @ R
    s_ref = torch.linalg.svdvals(A)
    spec = spectral.spectrum(L, R, 1.0, k)
    for i in range(k):
        assert float(spec.s[i]) == pytest.approx(float(WINDOW[i]), rel=1e-7), i
        assert float(spec.s[i]) == pytest.approx(float(s_ref[i]), rel=1e-6), i
        cu, cv = abs(float(spec.U[:, i] @ U[:, i])), abs(float(spec.V[:, i] @ V[:, i]))
        assert cu > 1 - 1e-8 and cv > 1 - 1e-8, (i, cu, cv)
        res = (A @ spec.V[:, i] - spec.s[i] * spec.U[:, i]).norm()
        assert float(res) <= 1e-7 * float(WINDOW[i]) + 1e-14, i
    assert float(spec.values[0]) == pytest.approx(1.0, rel=1e-14)
    assert np.allclose(spec.values.numpy()[:10], WINDOW.numpy(), atol=2e-8)  # every value to sqrt(eps) s_1
    # the same through the dense route (a penalty added) and spectrum_pair's G side
    dense = spectral.dense_spectrum(A, k)
    assert np.allclose(dense.s.numpy(), WINDOW[:k].numpy(), rtol=1e-7)
    zero = torch.zeros(30, 1, dtype=torch.float64)
    pair, _ = spectral.spectrum_pair(L, R, torch.zeros(10, 1, dtype=torch.float64), zero, 1.0, k, lambda: None)
    assert np.allclose(pair.s.numpy(), WINDOW[:k].numpy(), rtol=1e-7)


def test_window_edges_and_float32():
    """Just above eps^(1/4) s_1 the Gram route is kept and right to eps (s_1/s_k)^2; float32's window
    (eps^(1/4) = 1.9e-2) is handed to the SVD."""
    s = torch.tensor([1.0, 5e-4, 2e-4, 0.0], dtype=torch.float64)
    L, R, U, V = _known(4, 20, 15, s, seed=1)
    spec = spectral.spectrum(L, R, 1.0, 3)
    assert np.allclose(spec.s.numpy(), s[:3].numpy(), rtol=1e-8)
    s32 = torch.tensor([1.0, 0.3, 1e-2, 1e-3, 0.0], dtype=torch.float64)
    L, R, U, V = _known(5, 20, 15, s32, seed=2, dtype=torch.float32)
    spec = spectral.spectrum(L, R, 1.0, 4)
    assert spec.s.dtype == torch.float32
    assert np.allclose(spec.s.double().numpy(), s32[:4].numpy(), rtol=3e-3)
    for i in range(4):
        assert abs(float(spec.V[:, i].double() @ V[:, i])) > 1 - 1e-3, i


def test_planted_and_balanced_weights_against_a_reimplementation():
    """W = W_S + planted n^(-1/4) v q^T (v = ones, or signs from the weights stream after W_S), rows
    normalised; balanced a has exactly floor(m/2) plus ones, permuted by the outer stream."""
    n, d, m, seed = 30, 20, 25, 5
    for vector in ("ones", "signs"):
        cfg = _cfg("model.planted=0.7", f"model.planted_vector={vector}", "model.outer=balanced")
        _, ds, net = analysis.prepare(cfg)
        g = generator(seed, "weights")
        W = torch.randn(m, d, generator=g, dtype=torch.float64)
        W = W / W.norm(dim=1, keepdim=True)
        v = torch.ones(m, dtype=torch.float64)
        if vector == "signs":
            v = torch.randint(0, 2, (m,), generator=g, dtype=torch.float64) * 2 - 1
        W = W + 0.7 * n**-0.25 * torch.outer(v, ds.q)
        assert torch.allclose(net.W, W / W.norm(dim=1, keepdim=True), rtol=0, atol=1e-15), vector
        a = torch.ones(m, dtype=torch.float64)
        a[m // 2 :] = -1
        assert torch.equal(net.a, a[torch.randperm(m, generator=generator(seed, "outer"))])
        assert int((net.a > 0).sum()) == m // 2


def test_real_data_labels_are_parity_or_one_class():
    from sklearn.datasets import load_digits

    from gradrank.data import real as realdata

    target = load_digits().target
    perm = torch.randperm(target.size, generator=generator(2, "split")).numpy()[:40]
    for cls, expect in ((-1, np.where(target[perm] % 2 == 0, 1.0, -1.0)), (3, np.where(target[perm] == 3, 1.0, -1.0))):
        cfg = config.load(sets=["data.source=digits", "data.n=40", f"data.digits_class={cls}"], seed=2)
        assert np.array_equal(realdata.load(cfg.data, cfg.seed)[1], expect), cls
