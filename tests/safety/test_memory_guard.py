"""The memory guard sees every allocation an input can cause before it happens: every .npz member
numpy would read (whatever its name), the float64 copy of small dtypes, the data and weights
files in every command, every size key of the config, config files themselves, and a sweep
grid's size before it is expanded."""

from __future__ import annotations

import io as _io
import math
import os
import zipfile

import numpy as np
import pytest
from _reliability import record, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.config import resources
from gradrank.errors import InputError
from gradrank.io import declared_shapes, load_arrays
from gradrank.sweeps import spec as sw

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
DTYPES = ["bool", "int8", "uint8", "int16", "float16", "float32", "int64", "float64"]


def npy_bytes(a: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@st.composite
def archive(draw):
    """An .npz with X stored under 'X', 'X.npy' or both, of any small dtype, plus stray members."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = (draw(st.integers(2, 40)), draw(st.integers(1, 30)))
    names = draw(st.sampled_from([["X.npy"], ["X"], ["X", "X.npy"], ["X.npy", "X"]]))
    extra = draw(st.lists(st.sampled_from(["y.npy", "notes.txt", "config_toml.npy", "junk"]), unique=True, max_size=3))
    limit = draw(st.integers(64, 40 * 30 * 16 + 1000))
    return dtype, shape, names, extra, limit


@FAST
@given(case=archive())
def test_npz_guard_counts_the_member_numpy_reads_and_its_float64_copy(tmp_path_factory, case):
    """Reference: np.load's own lookup picks the member; its size plus the float64 copy decides."""
    dtype, shape, names, extra, limit = case
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    rng = np.random.default_rng(0)
    arrays = {n: (rng.standard_normal((shape[0] + i, shape[1])) * 3).astype(dtype) for i, n in enumerate(names)}
    with zipfile.ZipFile(path, "w") as zf:
        for n, a in arrays.items():
            zf.writestr(n, npy_bytes(a))
        for n in extra:
            zf.writestr(n, npy_bytes(np.array("text")) if n.endswith(".npy") else b"not an array")
    with np.load(path, allow_pickle=False) as z:
        expected = z["X"]  # numpy's choice of member
    need = expected.size * (expected.dtype.itemsize + 8)
    if need > limit:
        with pytest.raises(InputError, match="GiB"):
            declared_shapes(path, ("X",), max_bytes=limit)
        with pytest.raises(InputError, match="GiB"):
            load_arrays(path, required=("X",), max_bytes=limit)
    else:
        assert declared_shapes(path, ("X",), max_bytes=limit)["X"] == expected.shape
        got = load_arrays(path, required=("X",), max_bytes=limit)["X"]
        assert got.dtype == np.float64 and np.array_equal(got, expected.astype(np.float64))


def test_npz_guard_recorded():
    record(
        "memory guard",
        "npz members named X / X.npy / both, 8 dtypes, stray members, random limits (40 hypothesis examples)",
        "refused exactly when stored + float64 copy exceed the limit; else numpy's member loaded",
    )


def test_hidden_member_without_suffix_is_checked(tmp_path):
    """A member 'X' (no .npy) declaring 10^12 rows is refused from its header, never read."""
    header = _io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("X.npy", npy_bytes(np.ones((4, 3))))
        zf.writestr("X", header.getvalue() + b"\0" * 64)
    with pytest.raises(InputError, match="truncated"):
        load_arrays(tmp_path / "d.npz", required=("X",))
    record("memory guard", "npz with a small 'X.npy' and a huge 'X' (numpy reads 'X')", "exit 2 from the header of 'X'")


@pytest.mark.parametrize("command", ["analyze", "train", "decompose", "sweep"])
@pytest.mark.parametrize("kind", ["npy", "csv", "npz-int8"])
def test_data_file_size_guards_every_command(tmp_path, command, kind):
    """The estimate is taken from the file's shape (300 x 200), not the config's data.n/data.d."""
    X = np.random.default_rng(0).standard_normal((300, 200))
    path = tmp_path / f"d.{kind[:3]}"
    if kind == "npy":
        np.save(path, X)
    elif kind == "csv":
        np.savetxt(path, X, delimiter=",")
    else:
        np.savez(path, X=(X * 10).astype(np.int8))
    sets = ["--set", "compute.max_memory_gb=0.002", "--set", "data.n=10", "--set", "data.d=5", "--set", "model.width=10"]
    src = ["--set", "data.source=file", "--set", f"data.path={path}"]
    out = tmp_path / "out"
    before = tree(tmp_path)
    if command == "decompose":
        res = CliRunner().invoke(app, ["decompose", "--data", str(path), *sets, "-o", str(out)])
    elif command == "sweep":
        res = CliRunner().invoke(app, ["sweep", *src, *sets, "--grid", "seed=0,1", "-o", str(out), "--no-report"])
    else:
        res = CliRunner().invoke(app, [command, *src, *sets, "-o", str(out), "--no-report"])
    if command == "sweep":  # the guard runs in each point, before it allocates: every point failed
        assert res.exit_code == 3, res.output
        status = {p.name for p in (out / "points").iterdir()}
        assert len(status) == 2 and all(n.endswith(".failed.json") for n in status)
        assert all("300, 200, 10" in (out / "points" / n).read_text() for n in status)
        return record(
            "memory guard",
            f"sweep with a 300 x 200 {kind} file, 2 MB allowed",
            "every point failed by the guard before allocating",
        )
    assert res.exit_code == 2, res.output
    line = res.stderr.strip()
    assert "300, 200, 10" in line and "\n" not in line, line
    assert tree(tmp_path) == before
    record(
        "memory guard",
        f"{command} with a 300 x 200 {kind} file, config n = 10, d = 5, 2 MB allowed",
        "exit 2: the file's shape is estimated",
    )


SIZE_KEYS = {
    "data.n_test": ["data.n_test={v}"],
    "data.teacher_width": ["data.target=teacher", "data.teacher_width={v}"],
    "data.embed_dim": ["data.source=digits", "data.embed_dim={v}"],
    "analysis.top_k": ["analysis.top_k={v}"],
    "train.steps": ["train.steps={v}", "train.record_every=1", "train.checkpoint_every=1"],
    "regularizer.noise_draws": ["regularizer.input_noise=0.1", "regularizer.noise_mode=average", "regularizer.noise_draws={v}"],
}


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(sorted(SIZE_KEYS)), exponent=st.integers(2, 9))
def test_every_size_key_is_estimated(key, exponent):
    """The estimate grows with each size key, and a value that alone exceeds the limit is refused naming it."""
    base = ["data.n=50", "data.d=40", "model.width=60", "compute.max_memory_gb=0.5"]
    small = config.load(sets=[*base, *(s.format(v=2) for s in SIZE_KEYS[key])])
    big = config.load(sets=[*base, *(s.format(v=10**exponent) for s in SIZE_KEYS[key])])
    assert resources.check_memory(small) < sum(b for _, b in resources.parts(big).values())
    need = sum(b for _, b in resources.parts(big).values())
    if need > 0.5 * 2**30:
        with pytest.raises(InputError) as exc:
            resources.check_memory(big)
        assert key.split(".")[-1] in str(exc.value) or "noise draws" in str(exc.value), str(exc.value)
    else:
        assert resources.check_memory(big) == need


def test_size_keys_recorded():
    record(
        "memory guard",
        f"size keys {', '.join(sorted(SIZE_KEYS))} at 10^2..10^9 (30 hypothesis examples)",
        "estimated; refused above the limit naming the key",
    )


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(lengths=st.lists(st.integers(1, 2000), min_size=1, max_size=4), seeds=st.integers(0, 10**6), zip_=st.booleans())
def test_sweep_grid_sized_before_expansion(lengths, seeds, zip_):
    if zip_:
        lengths = [lengths[0]] * len(lengths)
    keys = ["data.nu", "data.alpha", "model.c", "seed"][: len(lengths)]
    grid = [f"{k}=0:{n}:{n}" if k != "data.nu" else f"{k}=0:1:{n}" for k, n in zip(keys, lengths)]
    seeds = 0 if "seed" in keys else seeds
    total = (lengths[0] if zip_ else math.prod(lengths)) * max(1, seeds)
    if total > sw.MAX_POINTS:
        with pytest.raises(InputError, match="points"):
            sw.load(None, [], None, grid, seeds, zip_)
    else:
        _, spec = sw.load(None, [], None, grid, seeds, zip_)
        assert sw.grid_size(spec) == total


def test_sweep_grid_range_count_bounded():
    with pytest.raises(InputError, match="range count"):
        sw.parse_values("0:1:1000000000", "data.nu")
    record(
        "memory guard",
        "sweep grids of up to 2000^4 x 10^6 points, ranges of 10^9 values (40 hypothesis examples)",
        f"refused above {sw.MAX_POINTS} points before expansion",
    )


def test_config_file_size_and_kind(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"seed = 1\n" + b"#" * (2 << 20))
    with pytest.raises(InputError, match="bytes"):
        config.read_toml(big)
    os.mkfifo(tmp_path / "f.toml")
    with pytest.raises(InputError, match="not a regular file"):
        config.read_toml(tmp_path / "f.toml")
    record("memory guard", "a 2 MiB config file, a FIFO as config", "exit 2 before reading (1 MiB limit, regular files only)")
