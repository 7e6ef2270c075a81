"""Bad input never becomes an internal error, a silent data change or a misleading message:
the CSV loader drops nothing, a later --set never resets earlier keys, degenerate sizes, huge
strengths and unusable paths are exit 2 with one line, non-UTF-8 and emoji names work, a
gradient at rounding level is not trusted, and an overflow names the key or file behind it."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
from _reliability import record, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradrank import api, config
from gradrank.cli.app import app
from gradrank.errors import InputError
from gradrank.io import load_arrays

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--set", "data.n=24", "--set", "data.d=12", "--set", "model.width=16", "--set", "output.report=false"]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def cli(*args, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args])
    finally:
        os.chdir(old)


def one_error_line(res) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# ---------------------------------------------------------------------------- CSV: nothing dropped


@st.composite
def csv_matrix(draw):
    n, d = draw(st.integers(2, 12)), draw(st.integers(1, 6))
    X = np.array(draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n * d, max_size=n * d))).reshape(n, d)
    return X, draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n"])), draw(st.booleans())


@FAST
@given(case=csv_matrix())
def test_csv_parsed_exactly_every_row_kept(tmp_path_factory, case):
    """BOM, header, CRLF, trailing newline, spaces: the matrix comes back bit for bit (repr round trip)."""
    X, bom, header, eol, spaces = case
    sep = ", " if spaces else ","
    lines = ([sep.join(f"col{j}" for j in range(X.shape[1]))] if header else []) + [
        sep.join(repr(float(v)) for v in row) for row in X
    ]
    path = tmp_path_factory.mktemp("csv") / "x.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (eol.join(lines) + eol).encode())
    got = load_arrays(path, required=("X",))["X"]
    assert got.shape == X.shape and np.array_equal(got, X)


@st.composite
def broken_csv(draw):
    n, d = draw(st.integers(2, 8)), draw(st.integers(2, 5))
    rows = [[str(float(i * d + j)) for j in range(d)] for i in range(n)]
    r = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["cell", "ragged-short", "ragged-long", "nan", "overflow"]))
    c = draw(st.integers(0, d - 1))
    if kind == "cell":
        rows[r][c] = draw(st.sampled_from(["x", "1.2.3", "--1", "0x10", "1e", "#3", "'7'"]))
    elif kind == "nan":
        rows[r][c] = "nan"
    elif kind == "overflow":
        rows[r][c] = "1e999"
    elif kind == "ragged-short" and r > 0:
        rows[r] = rows[r][:-1]
    elif kind == "ragged-long" or kind == "ragged-short":
        rows[r] = rows[r] + ["1.0"] if r > 0 else rows[r]
        if r == 0:
            rows[1] = rows[1] + ["1.0"]
            r = 1
    return rows, r, c, kind, draw(st.booleans())


@FAST
@given(case=broken_csv())
def test_csv_bad_cell_or_ragged_row_names_row_and_column(tmp_path_factory, case):
    rows, r, c, kind, bom = case
    path = tmp_path_factory.mktemp("csv") / "bad.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "\n".join(",".join(row) for row in rows).encode())
    with pytest.raises(InputError) as exc:
        load_arrays(path, required=("X",))
    msg = str(exc.value)
    assert f"row {r + 1}" in msg and "\n" not in msg, msg
    if not kind.startswith("ragged"):
        assert f"column {c + 1}" in msg, msg


def test_csv_cases_recorded():
    record(
        "silent data",
        "CSV with a byte-order mark, header, CRLF, spaces (25 hypothesis examples)",
        "every row kept, values bit-identical",
    )
    record(
        "silent data",
        "CSV with one bad cell, NaN, 1e999 or a ragged row (25 hypothesis examples)",
        "exit 2 naming the row (and column)",
    )


# ---------------------------------------------------------------------------- --set never resets earlier keys


SCALARS = ("data.n", "data.d", "data.n_test", "model.width")


@FAST
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(SCALARS), st.integers(3, 40)),
            st.tuples(
                st.sampled_from(["data", "model"]),
                st.dictionaries(st.sampled_from(["n", "d", "width", "n_test"]), st.integers(3, 40), max_size=2),
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_later_set_never_resets_earlier_keys(steps):
    """Reference: a flat dict of dotted keys, each --set (a value or an inline table) updating only the keys it names."""
    expect, sets = {}, []
    for key, value in steps:
        if isinstance(value, dict):
            fields = {"data": ("n", "d", "n_test"), "model": ("width",)}[key]
            value = {k: v for k, v in value.items() if k in fields}
            sets.append(f"{key}={{{', '.join(f'{k} = {v}' for k, v in value.items())}}}")
            expect |= {f"{key}.{k}": v for k, v in value.items()}
        else:
            sets.append(f"{key}={value}")
            expect[key] = value
    cfg = config.load(sets=sets)
    flat = {f"{s}.{k}": v for s, t in cfg.to_dict().items() if isinstance(t, dict) for k, v in t.items()}
    for key, value in expect.items():
        assert flat[key] == value, (sets, key)


def test_set_cases_recorded():
    record(
        "silent data",
        "sequences of --set KEY=V and --set SECTION={...} (25 hypothesis examples)",
        "every key keeps the last value set for it",
    )


# ---------------------------------------------------------------------------- no internal error on bad input

BAD_SETS = [
    *[f"data.d=1 --set data.target={t}" for t in ("multi_index", "single_index", "linear", "teacher", "noise")],
    *[f"data.d=1 --set data.link={lk}" for lk in ("triple", "he2", "pair", "linear")],
    "data.d=1 --set data.spike=eigvec",
    "data.n=1",
    *[
        f"{k}={v}"
        for k in (
            "regularizer.weight_decay",
            "regularizer.jacobian",
            "regularizer.input_noise",
            "data.label_noise",
            "model.c",
            "model.planted",
            "data.zeta",
        )
        for v in ("1e308", "1e200", "1e30")
    ],
    "regularizer.input_noise=1e5 --set regularizer.noise_mode=surrogate",
    "regularizer.jacobian=1e6 --set model.activation=tanh",
    "model.c=1e6 --set model.scaling=mf --set compute.dtype=float32",
    "data.label_noise=1e6 --set compute.dtype=float32",
]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(BAD_SETS), command=st.sampled_from(["analyze", "train"]))
def test_degenerate_sizes_and_huge_strengths_never_internal(tmp_path_factory, case, command):
    work = tmp_path_factory.mktemp("bad")
    extra = ["--set", "train.steps=3", "--set", "train.record_every=1"] if command == "train" else []
    res = cli(command, *TINY, *extra, *sum((["--set", s] for s in case.split(" --set ")), []), "-o", work / "out", "-q")
    assert res.exit_code in (0, 2), (case, res.output)
    if res.exit_code == 2:
        one_error_line(res)
        assert not (work / "out").exists()
    else:
        assert json.loads((work / "out" / "metrics.json").read_text())


def test_bad_sizes_recorded():
    record(
        "no internal error",
        f"d = 1, n = 1, strengths up to 1e308 ({len(BAD_SETS)} settings x analyze/train, 30 hypothesis examples)",
        "exit 0 or exit 2 with one line; never 1",
    )


def _paths(work: Path, sfx: str = "") -> dict[str, Path]:
    (work / f"afile{sfx}").write_text("x")
    os.symlink(work / "nowhere", work / f"dangling{sfx}")
    os.symlink(work / "loop", work / "loop")
    return {
        "dangling symlink": work / f"dangling{sfx}",
        "symlink loop": work / "loop" / f"sub{sfx}",
        "name too long": work / ("x" * 300 + sfx),
        "path too long": work / ("/".join(["y" * 200] * 25) + sfx),
        "file where a directory is expected": work / f"afile{sfx}" / f"sub{sfx}",
        "a file": work / f"afile{sfx}",
        "empty": Path(""),
        "newline in the name": work / "new\nline" / f"a\rb{sfx}",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "dangling symlink",
        "symlink loop",
        "name too long",
        "path too long",
        "file where a directory is expected",
        "a file",
        "empty",
    ],
)
@pytest.mark.parametrize("command", ["analyze", "decompose", "generate"])
def test_unusable_output_paths_exit_2(tmp_path, kind, command):
    work = tmp_path / "w"
    work.mkdir()
    target = _paths(work, ".npz" if command == "generate" else "")[kind]
    np.savez(work / "data.npz", X=np.random.default_rng(0).standard_normal((20, 8)))
    before = tree(work)
    if command == "generate":
        res = cli("generate", *TINY[:6], "-o", target)
    elif command == "decompose":
        res = cli("decompose", "--data", work / "data.npz", "--set", "model.width=8", "-o", target, "-q")
    else:
        res = cli("analyze", *TINY, "-o", target, "-q")
    line = one_error_line(res)
    assert tree(work) == before
    record("no internal error", f"{command} -o <{kind}>", f"exit 2: {line[:90]}")


def test_newline_in_output_path_accepted_and_messages_one_line(tmp_path):
    """A newline is a valid name character: the run is written there; an error naming it stays one line."""
    target = tmp_path / "new\nline"
    res = cli("analyze", *TINY, "-o", target, "-q")
    assert res.exit_code == 0 and (target / "metrics.json").is_file()
    line = one_error_line(cli("analyze", *TINY, "--set", "data.n\nx=3", "-o", tmp_path / "o"))
    assert "data.n\\nx" in line
    line = one_error_line(cli("decompose", "--data", tmp_path / "no\nfile.npz", "-o", tmp_path / "o2"))
    assert "no\\nfile.npz" in line
    record(
        "no internal error",
        "newlines in -o, in a --set key and in a --data path",
        "run written to the newline name; errors one line, the newline shown as \\n",
    )


def test_full_disk_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    import gradrank.io as gio

    real = os.fsync
    calls = {"n": 0}

    def full(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # after the marker: in the middle of the run's files
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(gio.os, "fsync", full)
    res = cli("analyze", *TINY, "-o", tmp_path / "out", "-q")
    line = one_error_line(res)
    assert "No space left on device" in line and str(tmp_path / "out")[:-4] in line
    assert tree(tmp_path) == set()
    record(
        "no internal error",
        "disk full (ENOSPC) while the run directory is written",
        f"exit 2 naming the path, nothing left: {line[:80]}",
    )


def test_deep_toml_fifo_device_huge_config_exit_2(tmp_path):
    import signal

    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 20000 + "]" * 20000)
    table = tmp_path / "table.toml"
    table.write_text("a = " + "{b = " * 5000 + "1" + "}" * 5000)
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (2 << 20))
    os.mkfifo(tmp_path / "fifo.toml")
    signal.alarm(60)  # a hang fails the test instead of the suite
    try:
        for path, needle in [
            (deep, "nested too deeply"),
            (table, "nested too deeply"),
            (big, "bytes"),
            (tmp_path / "fifo.toml", "not a regular file"),
            (Path("/dev/zero"), "not a regular file"),
            (tmp_path, "IsADirectoryError"),
        ]:
            line = one_error_line(cli("analyze", path, *TINY, "-o", tmp_path / "o"))
            assert needle in line, line
            record("no internal error", f"config file: {needle} ({path.name})", f"exit 2: {line[-70:]}")
    finally:
        signal.alarm(0)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", [b"d\xc3\xa9\xf0\x9f\x98\x80", b"bad\xff\xfe"])
def test_non_utf8_and_emoji_names_accepted(tmp_path, name):
    data = Path(os.fsdecode(bytes(tmp_path) + b"/" + name + b".npz"))
    out = Path(os.fsdecode(bytes(tmp_path) + b"/out-" + name))
    np.savez(data, X=np.random.default_rng(1).standard_normal((20, 8)))
    res = cli("decompose", "--data", data, "--set", "model.width=8", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((out / "config.toml").read_text(encoding="utf-8"))
    assert cfg["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert json.loads((out / "metrics.json").read_text())["config"]["data"]["path"] == str(data)
    assert (out / "report.html").is_file()
    record("no internal error", f"data file and -o named {name!r}", "exit 0; config.toml valid UTF-8 with the file's sha256")


# ---------------------------------------------------------------------------- trust at rounding level


def _file_run(tmp_path, X, y, W=None, a=None, sets=()):
    np.savez(tmp_path / "d.npz", X=X, y=y)
    ov = {"data.source": "file", "data.path": str(tmp_path / "d.npz"), "data.sha256": ""}
    if W is not None:
        np.savez(tmp_path / "w.npz", W=W, a=a)
        ov |= {"model.weights": str(tmp_path / "w.npz"), "model.weights_sha256": ""}
    return api.analyze(config.load(sets=["model.width=20", "output.report=false", *sets], overrides=ov)).metrics


RNG = np.random.default_rng(0)
X0, Y0 = RNG.standard_normal((30, 12)), RNG.standard_normal(30)


@pytest.mark.parametrize(
    "case",
    ["underflow", "zero weights", "identical rows", "identical rows up to 1e-15", "zero targets and output"],
)
def test_rounding_level_gradient_is_not_trusted(tmp_path, case):
    W = a = None
    X, y = X0, Y0
    if case == "underflow":
        X, y = X0 * 1e-300, Y0 * 1e-300
    elif case == "zero weights":
        W, a = np.zeros((20, 12)), np.ones(20)
    elif case == "identical rows":
        X = np.tile(X0[:1], (30, 1))
    elif case == "identical rows up to 1e-15":
        X = np.tile(X0[:1], (30, 1)) + 1e-15 * X0
    else:
        y, W, a = np.zeros(30), np.zeros((20, 12)), np.ones(20)
    m = _file_run(tmp_path, X, y, W, a)
    assert not m["trust"]["ok"] and not m["trust"]["checks"]["signal"], m["trust"]
    assert any("rounding" in w or "zero" in w or "underflow" in w for w in m["trust"]["warnings"])
    record("trust", f"gradient at rounding level: {case}", f"trust.ok = false ({m['trust']['warnings'][0][:70]})")


@pytest.mark.parametrize("scale", [1e-150, 1e-100, 1e-30, 1e30, 1e60])
def test_scaled_gradient_trusted_only_when_its_labels_are_right(tmp_path, scale):
    """A linear network with X and y scaled by s has G scaled by s^2: the regime must be the unscaled
    one whenever trust.ok holds; at moderate scales it must hold (and the normalised spectrum agree)."""
    sets = ["data.center=false", "model.activation=linear"]
    got = _file_run(tmp_path, X0 * scale, np.ones(30) * scale, sets=sets)
    ref = _file_run(tmp_path, X0, np.ones(30), sets=sets)
    assert ref["trust"]["ok"]
    if 1e-40 < scale < 1e40:
        assert got["trust"]["ok"], got["trust"]
        s_ref, s_got = np.array(ref["singular_values"]), np.array(got["singular_values"])
        assert np.allclose(s_got / s_got[0], s_ref / s_ref[0], rtol=1e-8, atol=1e-12)
    if got["trust"]["ok"]:
        assert got["regime"] == ref["regime"] and got["outlier_labels"] == ref["outlier_labels"]
    state = "trusted, same regime" if got["trust"]["ok"] else f"not trusted ({got['trust']['warnings'][0][:60]})"
    record("trust", f"X and y scaled by {scale:g} (linear network, G scaled by s^2)", state)


# ---------------------------------------------------------------------------- the right key is blamed


@pytest.mark.parametrize(
    "case, needle",
    [
        ("X file", "the data file"),
        ("y file", "y in the data file"),
        ("weights", "the weights file"),
        ("data.zeta", "data.zeta"),
    ],
)
def test_overflow_names_the_key_or_file(tmp_path, case, needle):
    X, y, W, a = X0, Y0, None, None
    if case == "X file":
        X = X0 * 1e160
    elif case == "y file":
        y = Y0 * 1e300
    elif case == "weights":
        W, a = RNG.standard_normal((20, 12)) * 1e300, np.ones(20)
    if case == "data.zeta":
        cfg = config.load(sets=["data.n=30", "data.d=12", "model.width=20", "data.zeta=1e100"])
        with pytest.raises(InputError) as exc:
            api.analyze(cfg)
    else:
        with pytest.raises(InputError) as exc:
            _file_run(tmp_path, X, y, W, a)
    msg = str(exc.value)
    assert needle in msg and "data.nu" not in msg, msg
    record("messages", f"overflow caused by {case}", f"InputError: ...{msg[-60:]}")


# ---------------------------------------------------------------------------- hand-edited metrics.json


@pytest.fixture(scope="module")
def a_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli("analyze", *TINY, "-o", out, "-q").exit_code == 0
    return json.loads((out / "metrics.json").read_text())


def _fields(d, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _fields(v, (*prefix, k))


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), value=st.sampled_from([None, "x", [1, "a"], {"a": 1}, -1, 1e308, True, "<script>"]))
def test_hand_edited_metrics_json_never_internal(a_run, tmp_path_factory, data, value):
    path = data.draw(st.sampled_from(sorted(_fields(a_run))))
    m = json.loads(json.dumps(a_run))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    run = tmp_path_factory.mktemp("edited")
    (run / "metrics.json").write_text(json.dumps(m))
    res = cli("report", run, "-o", run / "report")
    assert res.exit_code in (0, 2), (path, value, res.output)
    assert "Traceback" not in res.output
    if res.exit_code == 2:  # (matplotlib may warn about the edited values on stderr too)
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "metrics.json" in errors[0], res.stderr


def test_hand_edited_metrics_recorded():
    record(
        "no internal error",
        "report on a metrics.json with one field replaced (10 hypothesis examples)",
        "exit 0 or exit 2 naming metrics.json; never 1",
    )
