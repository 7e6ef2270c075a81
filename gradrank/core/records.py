"""Typed result records: dataclasses whose `to_dict()` is their JSON form and whose `from_dict()`
reads a stored file back, checking every field (a foreign or hand-edited file is an InputError
naming the file and the field, exit 2).

Field types a record may use: bool, int, float, str, a Record, a Config (stored as its dict,
validated on reading), list[...] and dict[str, ...] of those, `X | None`, and Any (taken as stored). A field declared with `omit()` is left out of the
JSON while it is None (e.g. `norms.reg` without a regulariser), so the files keep their keys.
Unknown keys are ignored on reading (a newer writer may add some). Every JSON artifact carries
`"schema": SCHEMA`; `check_schema` refuses any other.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Union

from gradrank.config import Config
from gradrank.config import from_dict as config_from_dict
from gradrank.errors import InputError

SCHEMA = 1
"""The version of every JSON artifact's layout; a file without the key predates versioning (read as 1)."""


def omit(default=None):
    """A field left out of to_dict() while it is None."""
    return dataclasses.field(default=default, metadata={"omit_none": True})


def inline():
    """A Record field whose keys are written at its parent's level (a train summary holds the analysis' keys)."""
    return dataclasses.field(metadata={"inline": True})


def check_kind(record, kind: str, source: str):
    """record if its "kind" is `kind` (a file of another command is refused naming the field)."""
    if record.kind != kind:
        raise InputError(f"{source}: field 'kind' must be {kind!r}, got {record.kind!r}")
    return record


def check_schema(d: dict, source: str) -> None:
    """A stored object's "schema" is this version's (missing: written before versioning, same layout)."""
    if d.get("schema", SCHEMA) != SCHEMA:
        raise InputError(f"{source}: field 'schema' is {d.get('schema')!r}; this gradrank reads schema {SCHEMA}")


class Record:
    """Base of the result records (dataclasses): JSON form, checked reading, read access by JSON key."""

    def to_dict(self) -> dict:
        out: dict = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("inline"):
                out |= value.to_dict()
            elif not (value is None and f.metadata.get("omit_none")):
                out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, d, source: str = "record", _path: str = ""):
        """The record stored as `d`; InputError "<source>: field '<dotted name>' ..." on any mismatch."""
        if not isinstance(d, dict):
            where = f"field '{_path}'" if _path else "not a gradrank file:"
            raise InputError(f"{source}: {where} expected a JSON object, got {_kind(d)}")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            name = f"{_path}.{f.name}" if _path else f.name
            if f.metadata.get("inline"):
                values[f.name] = _check(hints[f.name], d, source, _path)
            elif f.name in d:
                values[f.name] = _check(hints[f.name], d[f.name], source, name)
            elif (
                f.metadata.get("omit_none")
                or f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING
            ):
                continue
            else:
                raise InputError(f"{source}: field '{name}' is missing")
        return cls(**values)

    def __getitem__(self, key: str):
        """Read access by JSON key (`m["norms"]["S1"]` is `m.norms.S1`)."""
        if key in _names(type(self)) and not (getattr(self, key) is None and _omitted(type(self), key)):
            return getattr(self, key)
        for f in dataclasses.fields(self):
            if f.metadata.get("inline"):
                inner = getattr(self, f.name)
                if key in inner:
                    return inner[key]
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    __iter__ = None  # not a mapping: iterate over to_dict()


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


@functools.lru_cache(maxsize=None)
def _names(cls) -> frozenset:
    return frozenset(f.name for f in dataclasses.fields(cls) if not f.metadata.get("inline"))


def _omitted(cls, name: str) -> bool:
    return next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("omit_none", False)


def _plain(value):
    if isinstance(value, (Record, Config)):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


_EXPECT = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _check(tp, value, source: str, name: str):
    """value if it has type tp (records built from their dicts), else InputError naming the field."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(inner, value, source, name)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value, source, name)
    if tp is Config:
        if not isinstance(value, dict):
            raise InputError(f"{source}: field '{name}' must be an object, got {_kind(value)}")
        try:
            return config_from_dict(value)
        except InputError as exc:
            raise InputError(f"{source}: field '{name}': {exc}") from None
    if origin is list:
        if not isinstance(value, list):
            raise InputError(f"{source}: field '{name}' must be a list, got {_kind(value)}")
        return [_check(args[0], v, source, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{source}: field '{name}' must be an object, got {_kind(value)}")
        return {k: _check(args[1], v, source, f"{name}.{k}") for k, v in value.items()}
    ok = (
        isinstance(value, bool)
        if tp is bool
        else not isinstance(value, bool) and isinstance(value, (int, float) if tp is float else tp)
    )
    if not ok:
        raise InputError(f"{source}: field '{name}' must be {_EXPECT.get(tp, tp.__name__)}, got {_kind(value)}")
    return value


# ---------------------------------------------------------------------------- the analysis' records


@dataclasses.dataclass
class Sizes(Record):
    n: int
    d: int
    m: int


@dataclasses.dataclass
class DataFacts(Record):
    """What the data turned out to be: zeta, and nu / the fitted bulk decay alpha where known;
    synthetic_targets: the target model drawn when a file held only X."""

    source: str
    zeta: float
    nu: float | None = None
    alpha_fit: float | None = None
    alpha_fit_r2: float | None = None
    synthetic_targets: str | None = omit()


@dataclasses.dataclass
class Norms(Record):
    """Operator norms of G and the terms (G_fro, E_fro: Frobenius); reg with a dense regulariser;
    bulk = ||E + lambda grad R||, the bulk edge's base when a penalty is added to G."""

    G: float
    G_fro: float
    S1: float
    S12: float
    S2: float
    E: float
    E_fro: float
    reg: float | None = omit()
    bulk: float | None = omit()


@dataclasses.dataclass
class Shares(Record):
    """Each term's ||.||_F^2 / ||G||_F^2."""

    S1: float
    S12: float
    S2: float
    E: float
    reg: float | None = omit()


@dataclasses.dataclass
class Alignment(Record):
    """|cos| of G's top singular vectors u_k with X_B^T r and q, and v_k with a o mu and S2's right factor."""

    residue: list[float]
    spike: list[float]
    right_mu: list[float]
    right_spike: list[float]


@dataclasses.dataclass
class Directions(Record):
    """A number for each predicted direction, the residue X_B^T r and the spike q."""

    residue: float
    spike: float


@dataclasses.dataclass
class Energy(Record):
    predicted_subspace: float
    top2_subspace: float


@dataclasses.dataclass
class Ranks(Record):
    stable: float
    effective: float
    energy90: int
    energy99: int
    outliers: int = 0


@dataclasses.dataclass
class RegTerm(Record):
    """A dense regulariser's own term: size, share of ||G||_F^2, fraction along X_B^T r and along q."""

    norm: float
    fro: float
    share: float
    residue: float
    spike: float


@dataclasses.dataclass
class Checks(Record):
    finite: bool
    identity: bool
    quadrature: bool
    spectrum: bool
    resolution: bool
    signal: bool = True  # G above rounding level (absent from files written before the check)


@dataclasses.dataclass
class Trust(Record):
    """When a number should not be believed: each check, and a sentence for each that failed."""

    ok: bool
    checks: Checks
    warnings: list[str]
    notes: list[str] = dataclasses.field(default_factory=list)  # about the input; they fail no check


@dataclasses.dataclass(kw_only=True)
class Metrics(Record):
    """One analysis: what metrics.json holds besides its config and provenance (keys in docs/model.md)."""

    sizes: Sizes
    data: DataFacts
    norms: Norms
    shares: Shares
    singular_values: list[float]
    alignment: Alignment
    captured: Directions
    directions: Directions
    energy: Energy
    rank: Ranks
    bulk_edge: float
    regime: str
    outlier_labels: list[str]
    mu_mean: float
    identity_error: float
    reg: RegTerm | None = omit()
    loss: float
    spectral_residual: float
    trust: Trust
    config_hash: str


# ---------------------------------------------------------------------------- training's records


@dataclasses.dataclass
class TrainInfo(Record):
    steps_done: int
    lr_effective: float
    n_test: int
    records: int
    track_fallbacks: int
    track_iterations_mean: float


@dataclasses.dataclass
class FinalLosses(Record):
    """The losses at the last record (none when nothing was recorded)."""

    train_loss: float | None = omit()
    test_loss: float | None = omit()
    objective: float | None = omit()


@dataclasses.dataclass(kw_only=True)
class TrainSummary(Record):
    """A training run's metrics.json: "kind": "train", the final analysis' keys, then the run's own."""

    kind: str = "train"
    analysis: Metrics = inline()
    diverged: bool
    message: str
    train: TrainInfo
    final: FinalLosses

    @classmethod
    def from_dict(cls, d, source: str = "record", _path: str = ""):
        out = super().from_dict(d, source, _path)
        if out.kind != "train":
            raise InputError(f"{source}: field 'kind' must be 'train', got {out.kind!r}")
        return out

    def __getattr__(self, name: str):
        """The final analysis' fields (`summary.norms` is `summary.analysis.norms`)."""
        if name == "analysis":
            raise AttributeError(name)
        return getattr(self.analysis, name)


FEATURES = 2  # top singular vectors of W - W0 followed
FEATURE_COLUMNS = tuple(f"feat_{what}_{i + 1}" for i in range(FEATURES) for what in ("residue", "spike", "index"))
BATCH_COLUMNS = ("batch_G", "batch_S1", "batch_S12", "batch_S2", "batch_E")


@dataclasses.dataclass
class TrainRecord(Record):
    """One row of trajectory.csv: losses, term norms and the top-k singular values s of G at a step."""

    step: int
    train_loss: float
    test_loss: float
    objective: float
    G: float
    G_fro: float
    S1: float
    S12: float
    S2: float
    E: float
    reg: float
    s: list[float]
    outliers: int
    stable_rank: float
    align_residue_1: float
    align_spike_1: float
    align_residue_2: float
    align_spike_2: float
    drift_max_angle: float
    drift: float
    track_residual: float
    track_fallback: int
    track_iterations: int
    # feature learning (W - W0's top directions) and the mini-batch gradient's terms (sgd/adam), NaN where undefined
    extra: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FEATURE_COLUMNS + BATCH_COLUMNS, float("nan"))
    )

    @staticmethod
    def columns(k: int) -> list[str]:
        """trajectory.csv's columns, in order, for k tracked singular values: s becomes s1 .. sk, extra
        the feature-learning and mini-batch columns."""
        out = []
        for f in dataclasses.fields(TrainRecord):
            if f.name == "s":
                out += [f"s{i + 1}" for i in range(k)]
            elif f.name == "extra":
                out += [*FEATURE_COLUMNS, *BATCH_COLUMNS]
            else:
                out.append(f.name)
        return out

    def to_dict(self) -> dict:
        return {c: self[c] for c in self.columns(len(self.s))}

    @classmethod
    def from_dict(cls, d, source: str = "record", _path: str = ""):
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a JSON object, got {_kind(d)}")
        k = 0
        while f"s{k + 1}" in d:
            k += 1
        s = [d[f"s{i + 1}"] for i in range(k)]
        extra = {c: d[c] for c in FEATURE_COLUMNS + BATCH_COLUMNS if c in d}
        return super().from_dict({**d, "s": s, "extra": extra}, source, _path)

    def __getitem__(self, key: str):
        if key.startswith("s") and key[1:].isdigit() and 1 <= int(key[1:]) <= len(self.s):
            return self.s[int(key[1:]) - 1]
        if key in self.extra:
            return self.extra[key]
        return super().__getitem__(key)
