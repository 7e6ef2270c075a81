"""Determinism: one config and seed give bitwise identical metrics and arrays (CPU, float64)
whether analysed alone, in a process pool, or on a Dask worker; and the seed alone decides."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
from _reliability import record

from gradrank import config

SETTINGS = [
    ["data.n=60", "data.d=80", "model.width=100"],
    [
        "data.n=50",
        "data.d=40",
        "model.width=70",
        "loss.kind=logistic",
        "model.activation=tanh",
        "data.alpha=1",
        "regularizer.weight_decay=0.01",
        "model.planted=1",
    ],
]


def analyze_sets(sets: list[str], seed: int = 3) -> tuple[str, dict]:
    """(metrics as canonical JSON, arrays) of one analysis: what is compared bitwise."""
    from gradrank.studies import analyze as analysis

    res = analysis.analyze(config.load(sets=sets, seed=seed))
    return json.dumps(res.metrics.to_dict(), sort_keys=True), res.arrays


def assert_identical(a, b):
    assert a[0] == b[0], "metrics differ"
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k].dtype == b[1][k].dtype and np.array_equal(a[1][k], b[1][k], equal_nan=True), k


@pytest.fixture(scope="module")
def alone():
    return [analyze_sets(s) for s in SETTINGS]


def test_process_pool_matches_alone(alone):
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        pooled = list(pool.map(analyze_sets, SETTINGS))
    for a, b in zip(alone, pooled):
        assert_identical(a, b)
    record(
        "determinism",
        f"{len(SETTINGS)} configs: alone vs ProcessPoolExecutor (spawn)",
        "metrics.json and arrays bitwise identical",
    )


def test_dask_matches_alone(alone):
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        remote = client.gather([client.submit(analyze_sets, s, pure=False) for s in SETTINGS])
    for a, b in zip(alone, remote):
        assert_identical(a, b)
    record(
        "determinism",
        f"{len(SETTINGS)} configs: alone vs Dask LocalCluster worker (client.submit)",
        "metrics.json and arrays bitwise identical",
    )


def test_seed_decides(alone):
    """Same seed again: identical; another seed: different data, so different numbers."""
    assert_identical(alone[0], analyze_sets(SETTINGS[0]))
    other = analyze_sets(SETTINGS[0], seed=4)
    assert json.loads(other[0])["singular_values"] != json.loads(alone[0][0])["singular_values"]
    record(
        "determinism",
        "same config and seed twice in one process; then another seed",
        "identical; another seed gives different singular values",
    )
