"""Hypothesis fuzzing of the config layer, `--set` strings, user data files and the CLI end to end.

The property everywhere: either a valid result, or an InputError (exit code 2 through the CLI)
whose message is one line naming the field or file, and nothing written. Example counts are
bounded so the file stays within its CI budget; the seed is fixed (derandomize) so a failure
reproduces."""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections import Counter

import numpy as np
import pytest
from _reliability import record, tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradrank import config
from gradrank.cli.app import app
from gradrank.errors import InputError
from gradrank.io import MARKER

FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
OUTCOMES: Counter = Counter()

FIELDS = {f"{sec}.{f.name}": f for sec, cls in config.schema._SECTION_CLASSES.items() for f in dataclasses.fields(cls())}
KEYS = sorted(FIELDS) + ["seed"]
NAMES_FIELD = re.compile(r"config key '[^']*'|config keys|--set|config file|config must")


def one_line_naming(msg: str, *names: str) -> bool:
    """One line that names the field (a config key) or the file."""
    named = any(n and n in msg for n in (*names, *KEYS)) or bool(NAMES_FIELD.search(msg))
    return "\n" not in msg and named


@pytest.fixture(scope="module", autouse=True)
def _table_rows():
    yield
    for (area, tried, outcome), count in sorted(OUTCOMES.items()):
        record(area, f"{tried} ({count} hypothesis examples)", outcome)


# ---------------------------------------------------------------------------- config layer

values = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.none(),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.text(alphabet=string.ascii_lowercase + "._", max_size=20),
    st.sampled_from(KEYS).map(lambda k: k[:-1] + "x"),
)


@FAST
@given(
    raw=st.dictionaries(
        st.sampled_from(list(config.SECTIONS) + ["seed", "dat", "extra"]),
        st.one_of(values, st.dictionaries(keys.map(lambda k: k.split(".")[-1]), values, max_size=4)),
        max_size=4,
    )
)
def test_fuzz_config_dicts(raw):
    """Nested dicts as TOML would give them: a Config that round-trips through TOML, or one line."""
    try:
        cfg = config.from_dict(raw)
    except InputError as exc:
        assert one_line_naming(str(exc)), str(exc)
        OUTCOMES["config", "random nested config tables", "InputError naming the key"] += 1
        return
    assert config.from_dict(__import__("tomllib").loads(config.to_toml(cfg))).hash() == cfg.hash()
    OUTCOMES["config", "random nested config tables", "valid config (TOML round trip checked)"] += 1


@st.composite
def plausible_set(draw):
    """KEY=VALUE with a value of the right kind for the key (often valid, sometimes out of range)."""
    key = draw(st.sampled_from(sorted(FIELDS)))
    f = FIELDS[key]
    if isinstance(f.default, bool) or f.metadata.get("choices"):
        return f"{key}={json.dumps(_valid_value(f, draw))}"
    return f"{key}={draw(st.integers(-3, 50) if isinstance(f.default, int) else st.floats(-1, 12))}"


@FAST
@given(
    sets=st.lists(
        st.one_of(
            plausible_set(),
            st.tuples(keys, values).map(lambda kv: f"{kv[0]}={json.dumps(kv[1]) if not isinstance(kv[1], str) else kv[1]}"),
            st.text(max_size=25),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_set_strings(sets):
    try:
        cfg = config.load(sets=sets)
    except InputError as exc:
        assert one_line_naming(str(exc)), (sets, str(exc))
        OUTCOMES["config", "random --set strings", "InputError naming the key or --set"] += 1
        return
    assert isinstance(cfg, config.Config)
    OUTCOMES["config", "random --set strings", "valid config"] += 1


toml_docs = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "[data]",
                "[model]",
                "[dat]",
                "n = 3",
                "n = -1",
                "nu = 2.5",
                "nu = 'x'",
                "[[data]]",
                "seed = 1",
                "seed = 1e400",
                "width = 0x10",
                'activation = "tanh"',
                "a.b = 1",
                "= 3",
                "[data.n]",
                "path = '''",
                "n = 1979-05-27",
                "nu = inf",
                "nu = nan",
                "\x00",
            ]
        ),
        max_size=8,
    ).map("\n".join),
)


@FAST
@given(text=toml_docs)
def test_fuzz_toml_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        config.load(path)
    except InputError as exc:
        assert one_line_naming(str(exc), str(path)), (text, str(exc))
        OUTCOMES["config", "random and malformed TOML files", "InputError naming the key or file"] += 1
        return
    OUTCOMES["config", "random and malformed TOML files", "valid config"] += 1


# ---------------------------------------------------------------------------- data files

DTYPES = ["float64", "float32", "int64", "int8", "bool", "complex128", "U3", "object"]


@st.composite
def data_files(draw):
    """(suffix, bytes) of a data file: sane, wrong-shaped, non-finite, non-numeric or damaged."""
    suffix = draw(st.sampled_from([".npz", ".npy", ".csv"]))
    n, d = draw(st.integers(0, 12)), draw(st.integers(0, 6))
    shape = draw(st.sampled_from([(n, d)] * 4 + [(n,), (n, d, 2), ()]))
    dtype = draw(st.sampled_from(DTYPES[:3] * 4 + DTYPES[3:]))
    X = np.asarray(np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape) * 3)
    if draw(st.integers(0, 3)) == 0 and X.size:
        X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e308]))
    with np.errstate(invalid="ignore"):
        X = X.astype(dtype)
    if suffix == ".csv":
        rows = [",".join(str(v) for v in np.atleast_1d(r)) for r in np.atleast_2d(X)] if X.ndim <= 2 else ["1,2"]
        body = "\n".join(draw(st.sampled_from([rows, ["a,b", *rows], rows + ["x,y"], rows[:1] + ["1"]]))).encode()
    else:
        import io

        buf = io.BytesIO()
        y = np.random.default_rng(1).standard_normal(draw(st.sampled_from([n, max(n - 1, 0)])))
        if suffix == ".npz":
            np.savez(buf, X=X, y=y)
        else:
            np.save(buf, X, allow_pickle=True)
        body = buf.getvalue()
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip", "prefix"]))
    if damage == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        body = body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    elif damage == "prefix":
        body = draw(st.binary(max_size=8)) + body
    return suffix, body, f"{dtype}{list(shape)}/{damage}"


@FAST
@given(f=data_files())
def test_fuzz_data_files(tmp_path_factory, small_cfg, f):
    """data.load on arbitrary files: a finite Dataset of the file's size, or one line naming the file."""
    from gradrank.data import spiked as data

    suffix, body, what = f
    path = tmp_path_factory.mktemp("data") / f"x{suffix}"
    path.write_bytes(body)
    cfg = small_cfg("data.link=linear").replace(**{"data.source": "file", "data.path": str(path), "analysis.mu": "empirical"})
    try:
        ds = data.load(cfg.data, cfg.seed, cfg.loss.kind)
    except InputError as exc:
        assert one_line_naming(str(exc), str(path)), (what, str(exc))
        OUTCOMES[
            "data file",
            "random .npz/.npy/.csv (shapes, dtypes incl. object, NaN/Inf, truncation, bit flips)",
            "InputError naming the file",
        ] += 1
        return
    assert ds.X.ndim == 2 and ds.n >= 2 and bool(ds.X.isfinite().all()) and bool(ds.y.isfinite().all())
    OUTCOMES[
        "data file",
        "random .npz/.npy/.csv (shapes, dtypes incl. object, NaN/Inf, truncation, bit flips)",
        "loaded: finite 2-d data",
    ] += 1


# ---------------------------------------------------------------------------- end to end


def _valid_value(f: dataclasses.Field, draw):
    meta, default = f.metadata, f.default
    if meta.get("choices"):
        return draw(st.sampled_from(meta["choices"]))
    if isinstance(default, bool):
        return draw(st.booleans())
    if isinstance(default, int):
        lo, hi = meta.get("lo") or 0, meta.get("hi")
        return draw(st.integers(lo, min(hi if hi is not None else lo + 40, lo + 40)))
    lo = meta.get("lo") or 0.0
    hi = meta.get("hi") if meta.get("hi") is not None else lo + 5.0
    return draw(st.floats(lo, hi).filter(lambda v: v > lo or not meta.get("lo_open")))


SKIP = {
    "data.source",
    "data.path",
    "compute.device",
    "compute.max_memory_gb",
    "output.pdf",
    "output.report",
    "output.paper",
    "output.name",
    "data.zeta",
}
CAPS = {
    "data.n": (2, 40),
    "data.d": (1, 40),
    "model.width": (1, 40),
    "analysis.quadrature": (4, 40),
    "analysis.top_k": (1, 10),
    "data.n_test": (0, 10),
    "data.embed_dim": (0, 8),
    "regularizer.noise_draws": (1, 3),
}


@st.composite
def cli_settings(draw):
    """--set strings for a tiny run: random valid values for analysis-relevant keys, sometimes one bad one."""
    sets = []
    for key in draw(
        st.lists(st.sampled_from([k for k in FIELDS if not k.startswith("train.") and k not in SKIP]), max_size=8, unique=True)
    ):
        if key in CAPS:
            value = draw(st.integers(*CAPS[key]))
        else:
            value = _valid_value(FIELDS[key], draw)
        sets.append(f"{key}={json.dumps(value)}")
    for key, (lo, hi) in list(CAPS.items())[:3]:
        sets.append(f"{key}={draw(st.integers(lo, hi))}")
    if draw(st.integers(0, 3)) == 3:  # hypothesis favours 0: keep the odd branches rarer
        sets.append(f"data.zeta={draw(st.sampled_from([0.0, 1e-300, 1e-5, 1e3, 1e40, 1e120, 1e250]))}")
    if draw(st.integers(0, 3)) == 3:
        sets.append(
            draw(
                st.sampled_from(
                    [
                        "data.n=-3",
                        "data.nu=-1",
                        "model.activation=swish",
                        "data.zeta=-2",
                        "analysis.top_k=0",
                        "model.c=0",
                        "loss.kind=hinge",
                        "data.typo=1",
                    ]
                )
            )
        )
    return sets


@SLOW
@given(sets=cli_settings())
def test_fuzz_cli_analyze(tmp_path_factory, sets):
    """`gradrank analyze` with random settings: exit 0 with a complete, trusted-or-flagged run
    directory, or exit 2 with one line and nothing written. Never exit 1."""
    root = tmp_path_factory.mktemp("cli")
    out = root / "run"
    args = ["analyze", "-q", "-o", str(out), "--set", "output.report=false"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and one_line_naming(lines[0]), (sets, res.stderr)
        assert tree(root) == set()
        OUTCOMES["CLI", "gradrank analyze with random --set (n, d, m <= 40)", "exit 2, one line, nothing written"] += 1
        return
    assert res.exit_code == 0, (sets, res.output)
    assert tree(root) == {"run", *(f"run/{f}" for f in ("config.toml", "metrics.json", "provenance.json", "arrays.npz", MARKER))}
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["trust"]["checks"]) >= {"finite", "identity", "quadrature", "spectrum"}
    assert m["trust"]["ok"] == all(m["trust"]["checks"].values()) and len(m["trust"]["warnings"]) == sum(
        not v for v in m["trust"]["checks"].values()
    )
    if m["trust"]["ok"]:
        assert m["identity_error"] <= 1e-4 and np.isfinite(m["singular_values"]).all()
    with np.load(out / "arrays.npz", allow_pickle=False) as z:
        assert np.allclose(z["singular_values"][: len(m["singular_values"])], m["singular_values"], equal_nan=True)
    OUTCOMES[
        "CLI",
        "gradrank analyze with random --set (n, d, m <= 40)",
        "exit 0, complete run" + ("" if m["trust"]["ok"] else " with trust warnings"),
    ] += 1
