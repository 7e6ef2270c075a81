"""Built-in real data (digits, MNIST-1D, image patches): no download, exact spike extraction."""

import socket

import numpy as np
import pytest
import torch

from gradrank import config
from gradrank.data import real as realdata
from gradrank.data import spiked as data
from gradrank.errors import InputError
from gradrank.studies import analyze as analysis

SOURCES = ["digits", "mnist1d", "patches"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def load(source, *sets, seed=0):
    return config.load(
        sets=[f"data.source={source}", "data.n=150", "model.width=120", "analysis.top_k=3", "output.report=false", *sets],
        seed=seed,
    )


def dataset(cfg):
    return data.load(cfg.data, cfg.seed, cfg.loss.kind)


@pytest.mark.parametrize("source", SOURCES)
def test_source_loads_offline_and_identity_holds(source, no_network):
    cfg = load(source, "data.n_test=40")
    ds = dataset(cfg)
    assert ds.n == 150 and ds.X_test.shape == (40, ds.d) and set(ds.y.unique().tolist()) <= {-1.0, 1.0}
    assert torch.allclose(ds.X, ds.X_B + ds.zeta * torch.outer(ds.z, ds.q), atol=1e-12)
    assert float(ds.z.pow(2).mean()) == pytest.approx(1.0)
    assert float(ds.q.norm()) == pytest.approx(1.0)
    assert torch.allclose(ds.X.mean(0), torch.zeros(ds.d, dtype=ds.X.dtype), atol=1e-10)  # centred
    # q is the top principal direction: no unit vector captures more of X
    top = torch.linalg.svd(ds.X, full_matrices=False)[2][0]
    assert abs(float(top @ ds.q)) == pytest.approx(1.0, abs=1e-8)
    res = analysis.analyze(cfg)
    m = res.metrics
    assert m["identity_error"] < 1e-12 and m["trust"]["ok"]
    assert m["data"]["nu"] == pytest.approx(np.log(ds.zeta) / np.log(150))
    assert np.isfinite(m["data"]["alpha_fit"]) and 0 < m["data"]["alpha_fit_r2"] <= 1
    assert res.config.analysis.mu == "empirical"


@pytest.mark.parametrize("source", SOURCES)
def test_embedding_and_standardising(source, no_network):
    cfg = load(source, "data.embed_dim=90", "data.standardize=true")
    ds = dataset(cfg)
    assert ds.d == 90
    assert analysis.analyze(cfg).metrics["identity_error"] < 1e-12


def test_sources_are_seeded():
    for source in SOURCES:
        a, b, c = (dataset(load(source, seed=s)).X for s in (0, 0, 1))
        assert torch.equal(a, b) and not torch.equal(a, c)


def test_mnist1d_is_the_procedural_set_and_keeps_global_rng():
    from mnist1d.data import get_dataset_args, make_dataset

    realdata._mnist1d_pool.cache_clear()  # make the loader really call make_dataset
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    X, y, _, _ = realdata.mnist1d(load("mnist1d").data, 0)
    assert np.array_equal(np.random.get_state()[1], before)
    ref = make_dataset(get_dataset_args())
    pool = np.concatenate([ref["x"], ref["x_test"]])
    assert X.shape == (150, 40)
    assert all((np.abs(pool - row).sum(1) == 0).any() for row in X[:10])


def test_patch_size_sets_dimension_and_labels_split_photographs():
    X, y, _, _ = realdata.patches(load("patches", "data.patch_size=5").data, 0)
    assert X.shape == (150, 25) and 0.0 <= X.min() and X.max() <= 1.0
    assert abs(int((y == 1).sum()) - int((y == -1).sum())) <= 1


@pytest.mark.parametrize("source", ["digits", "mnist1d"])
def test_too_many_samples_is_input_error(source):
    with pytest.raises(InputError, match="data.n"):
        dataset(load(source, "data.n=6000"))


def test_population_mu_rejected_for_real_data():
    with pytest.raises(InputError, match="analysis.mu"):
        load("digits", "analysis.mu=population")


def test_bulk_exponent_is_the_loglog_fit_over_the_top_nine_tenths():
    """alpha_fit: an exact power law k^-1.3 gives alpha = 1.3 with R^2 = 1; a perturbed one matches
    numpy's polyfit over the top 90% of the sorted eigenvalues (an independent reimplementation)."""
    lam = torch.arange(1, 61, dtype=torch.float64) ** -1.3
    alpha, r2 = data.bulk_exponent(lam[torch.randperm(60)])
    assert alpha == pytest.approx(1.3, abs=1e-12) and r2 == pytest.approx(1.0, abs=1e-12)
    noisy = lam * torch.exp(0.1 * torch.randn(60, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    top = np.sort(noisy.numpy())[::-1][:54]
    slope, c = np.polyfit(np.log(np.arange(1, 55)), np.log(top), 1)
    resid = np.log(top) - (c + slope * np.log(np.arange(1, 55)))
    alpha, r2 = data.bulk_exponent(noisy)
    assert alpha == pytest.approx(-slope, rel=1e-10)
    assert r2 == pytest.approx(1 - (resid @ resid) / ((np.log(top) - np.log(top).mean()) ** 2).sum(), rel=1e-10)
    assert all(np.isnan(data.bulk_exponent(torch.tensor([1.0, 0.5]))))
