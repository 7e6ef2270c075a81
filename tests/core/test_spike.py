"""The one spike rule (gradrank/core/spike.py): the exact principal direction of the centred input,
its centring and sign conventions, and data loading's use of it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradrank import config
from gradrank.core import spike
from gradrank.data import spiked


@pytest.mark.parametrize("n, d", [(200, 30), (25, 120)])
def test_q_is_the_top_eigenvector_of_the_centred_gram(n, d):
    """Both sides (d x d Gram for n >= d, n x n otherwise): q is the centred Gram's top eigenvector to
    1e-12 (numpy's dense eigh of H_c^T H_c), unit, with its largest-magnitude entry positive."""
    g = torch.Generator().manual_seed(n)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    H = torch.randn(n, d, generator=g, dtype=torch.float64) + 5.0 + 3 * torch.randn(n, 1, generator=g, dtype=torch.float64) * u
    q = spike.principal_direction(H)
    Hc = (H - H.mean(0)).numpy()
    ref = np.linalg.eigh(Hc.T @ Hc)[1][:, -1]
    assert abs(float(q.norm()) - 1) < 1e-14
    assert np.abs(np.abs(q.numpy() @ ref) - 1) < 1e-12
    assert np.linalg.norm(q.numpy() - np.sign(ref[np.argmax(np.abs(ref))]) * ref) < 1e-12
    assert float(q[int(q.abs().argmax())]) > 0


def test_split_is_exact_centred_and_of_unit_latent_variance():
    """H = H_B + zeta z q^T exactly; zeta z = H_c q, so z has mean 0 and ||z||^2 = n; the mean stays in H_B."""
    g = torch.Generator().manual_seed(1)
    H = torch.randn(90, 12, generator=g, dtype=torch.float64) + 2.0
    sp = spike.principal(H)
    assert torch.allclose(sp.H_B + sp.zeta * torch.outer(sp.z, sp.q), H, rtol=0, atol=1e-14 * float(H.abs().max()))
    assert float(sp.z.mean()) == pytest.approx(0, abs=1e-13)
    assert float(sp.z @ sp.z) == pytest.approx(90, rel=1e-13)
    assert sp.zeta * sp.z @ torch.ones(90, dtype=torch.float64) == pytest.approx(0, abs=1e-11)
    assert sp.zeta == pytest.approx(float(((H - H.mean(0)) @ sp.q).norm()) / math.sqrt(90), rel=1e-13)
    assert torch.allclose(sp.H_B.mean(0), H.mean(0), rtol=0, atol=1e-13)


def test_data_files_use_the_spike_rule():
    """A data matrix's q, z, zeta and X_B (data.center, no q given) are the spike rule's on the centred X,
    and a given q is used as given (normalised) with the same centring."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((70, 15)) + rng.standard_normal((70, 1)) * np.linspace(1, 2, 15)
    dc = config.load().data
    ds = spiked.from_matrix(dc, 0, "mse", X, rng.standard_normal(70))
    sp = spike.principal(torch.as_tensor(X - X.mean(0)))
    assert torch.allclose(ds.q, sp.q, rtol=0, atol=1e-12) and ds.zeta == pytest.approx(sp.zeta, rel=1e-12)
    assert torch.allclose(ds.X_B, sp.H_B, rtol=0, atol=1e-12)
    given = rng.standard_normal(15)
    ds = spiked.from_matrix(dc, 0, "mse", X, rng.standard_normal(70), q=2 * given)
    q = torch.as_tensor(given / np.linalg.norm(given))
    assert torch.allclose(ds.q, q, rtol=0, atol=1e-15)
    assert torch.allclose(ds.zeta * ds.z, (ds.X - ds.X.mean(0)) @ q, rtol=0, atol=1e-12)


def test_uncentred_data_file_keeps_its_mean_in_the_spike():
    """data.center = false: X is taken as is by the rule too (q from X^T X, zeta z = X q, X_B q = 0)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 10)) + 1.5
    ds = spiked.from_matrix(config.load(sets=["data.center=false"]).data, 0, "mse", X, rng.standard_normal(60))
    ref = np.linalg.eigh(X.T @ X)[1][:, -1]
    assert abs(abs(float(ds.q.numpy() @ ref)) - 1) < 1e-12
    assert torch.allclose(ds.zeta * ds.z, torch.as_tensor(X) @ ds.q, rtol=0, atol=1e-12)
    assert float((ds.X_B @ ds.q).abs().max()) < 1e-12
