"""The Python API validates like the command line: every bad argument is one InputError naming
the argument, never a torch/LAPACK error, a MemoryError or a silent cast."""

from __future__ import annotations

import numpy as np
import pytest
from _reliability import record
from typer.testing import CliRunner

import gradrank
from gradrank.cli.app import app

RNG = np.random.default_rng(0)
X = RNG.standard_normal((30, 10))
SMALL = {"data.n": 30, "data.d": 20, "model.width": 20}

BAD_DECOMPOSE = {
    "y of the wrong length": (dict(X=X, y=np.ones(29)), r"y must have shape \(30,\)"),
    "y two-dimensional": (dict(X=X, y=np.ones((30, 1))), "y must be a 1-d array"),
    "NaN in X": (dict(X=np.where(X > 1.5, np.nan, X)), "X contains NaN"),
    "Inf in y": (dict(X=X, y=np.r_[np.inf, np.ones(29)]), "y contains NaN or Inf"),
    "complex X": (dict(X=X + 1j), "X must hold real numbers, got dtype complex128"),
    "object X": (dict(X=np.array([[object()] * 3] * 4)), "X must hold real numbers, got dtype object"),
    "string X": (dict(X=[["a", "b"], ["c", "d"]]), "X must hold real numbers"),
    "a single row": (dict(X=X[:1]), "X must have at least 2 rows"),
    "X one-dimensional": (dict(X=X[0]), "X must be a 2-d array"),
    "W without a": (dict(X=X, W=np.ones((5, 10))), "give both W and a"),
    "W of the wrong width": (dict(X=X, W=np.ones((5, 9)), a=np.ones(5)), r"W must have shape \(m, 10\)"),
    "a of the wrong length": (dict(X=X, W=np.ones((5, 10)), a=np.ones(4)), r"a must have shape \(5,\)"),
    "a width beyond memory": (
        dict(X=X, overrides={"model.width": 10**9, "compute.max_memory_gb": 1}),
        "model.width.*more than the 1 GiB allowed",
    ),
    "a non-string override key": (dict(X=X, overrides={1: 2}), "a config key must be a dotted string, got 1"),
}


@pytest.mark.parametrize("case", list(BAD_DECOMPOSE))
def test_decompose_refuses_each_bad_argument_with_one_input_error_naming_it(case):
    kwargs, message = BAD_DECOMPOSE[case]
    with pytest.raises(gradrank.InputError, match=message):
        gradrank.decompose(**kwargs)
    record("API", f"decompose: {case}", "InputError naming the argument")


def test_decompose_accepts_torch_tensors_and_integer_arrays_as_the_same_float64_data():
    import torch

    ints = RNG.integers(-3, 4, size=(30, 10))
    a = gradrank.decompose(ints, overrides={"model.width": 20})
    b = gradrank.decompose(torch.tensor(ints, dtype=torch.float32), overrides={"model.width": 20})
    assert a.metrics.norms.G == b.metrics.norms.G and a.metrics.sizes.n == 30


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eta="fast"), "eta must be a number"),
        (dict(eta=[1.0, -2.0]), "eta must be a number >= 0"),
        (dict(eta=[float("nan")]), "eta must be a number"),
        (dict(seeds=10**9), "seeds must be an integer from 1 to"),
        (dict(seeds=0), "seeds must be an integer from 1 to"),
        (dict(steps="2"), "steps must be a number"),
    ],
)
def test_onestep_refuses_bad_arguments_before_any_work(kwargs, message):
    with pytest.raises(gradrank.InputError, match=message):
        gradrank.onestep(overrides=SMALL, **kwargs)
    record("API", f"onestep({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})", "InputError naming the argument")


def test_the_onestep_command_refuses_a_seed_count_that_could_not_fit_before_allocating(tmp_path):
    res = CliRunner().invoke(app, ["onestep", "--seeds", "1000000000", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--seeds" in res.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "grid, message",
    [
        ({"data.nu": object()}, "grid: 'data.nu' must be a list of values"),
        ({"data.nu": [object()]}, "config key 'data.nu' must be a number"),
        ({3: [1, 2]}, "grid: a key must be a dotted config key string"),
        ({"data.nope": [1, 2]}, "unknown config key 'data.nope'"),
    ],
)
def test_sweep_refuses_bad_grids_and_writes_nothing(tmp_path, grid, message):
    with pytest.raises(gradrank.InputError, match=message):
        gradrank.sweep(overrides=SMALL, grid=grid, out=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    record("API", f"sweep(grid={grid!r})", "InputError, nothing written")


def test_a_config_dict_with_a_non_string_key_is_an_input_error():
    with pytest.raises(gradrank.InputError, match="a key must be a string"):
        gradrank.analyze(config={1: 2})
