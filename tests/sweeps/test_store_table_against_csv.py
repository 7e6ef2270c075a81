"""Gaps of the mutation audit (docs/testing.md), the sweep store: cell escaping, the list-length rule,
point states, the prefix of metrics named like a swept key, and the seed axis, against a store
written by hand and read back with the csv module."""

from __future__ import annotations

import csv
import json

from gradrank import config
from gradrank.sweeps import spec as sweep
from gradrank.sweeps import store as sweeps


def test_cells_escape_formulas_and_keep_numbers():
    from gradrank.results.tables import cell

    for text in ("=1+1", "+1", "@SUM(A1)", "\tx", "\rx"):
        assert cell(text) == "'" + text
    assert cell("-0.5") == "-0.5" and cell("rank-two") == "rank-two"
    assert cell(0.1) == "0.1" and cell(float("nan")) == "nan" and cell(None) == ""


def test_lists_up_to_max_list_enter_the_table():
    n = sweep.MAX_LIST
    flat = sweeps.flatten({"a": list(range(n)), "b": list(range(n + 1))})
    assert flat == {f"a.{i + 1}": i for i in range(n)}


def _store(tmp_path):
    store = sweeps.Store(tmp_path / "sw")
    store.write_manifest(
        {
            "format": sweep.FORMAT,
            "schema": 1,
            "base_hash": "0" * 64,
            "axes": {"data.nu": [0.1, 0.2, 0.3]},
            "seeds": 1,
            "mode": "product",
            "command": "analyze",
            "base_config": {},
            "keys": ["data.nu", "seed"],
            "points": [
                {"hash": "1111111111111111", "values": {"data.nu": 0.1, "seed": 0}},
                {"hash": "2222222222222222", "values": {"data.nu": 0.2, "seed": 0}},
                {"hash": "3333333333333333", "values": {"data.nu": 0.3, "seed": 0}},
            ],
        }
    )
    from gradrank import api, io

    m = api.analyze(overrides={"data.n": 20, "data.d": 15, "model.width": 25, "data.nu": 0.1}).metrics.to_dict()
    m["norms"]["S1"], m["regime"], m["config_hash"] = 2.5, "=bad", "1111111111111111"  # a formula-like cell, this point's hash
    store.point_dir("1111111111111111").mkdir(parents=True)
    (store.point_dir("1111111111111111") / "metrics.json").write_text(json.dumps(m))
    io.seal(store.point_dir("1111111111111111"), "analyze")  # as gradrank writes a point: sealed
    store.record_failure("2222222222222222", "InputError: boom\nsecond line")
    return store


def test_table_states_prefix_and_escaping(tmp_path):
    store = _store(tmp_path)
    assert [store.state(h) for h in ("1111111111111111", "2222222222222222", "3333333333333333")] == ["done", "failed", "pending"]
    assert store.outcome("3333333333333333") is None and store.outcome("2222222222222222").error.startswith("InputError: boom")
    rows = list(csv.DictReader(store.write_table().open()))
    assert [r["status"] for r in rows] == ["done", "failed", "pending"]
    assert rows[0]["data.nu"] == "0.1" and rows[0]["metrics.data.nu"] == "0.1"  # a metric named like a key
    assert rows[0]["norms.S1"] == "2.5" and rows[0]["regime"] == "'=bad"
    assert rows[1]["error"] == "InputError: boom" and rows[2]["norms.S1"] == ""
    summary = sweeps.summary(store)
    assert (summary["total"], summary["done"], summary["failed"], summary["pending"]) == (3, 1, 1, 1)


def test_seed_axis_starts_at_the_base_seed():
    base = config.load(seed=7)
    pts = sweep.points(base, sweep.SweepSpec(axes={"data.nu": [0.1, 0.2]}, seeds=2))
    assert [p.values for p in pts] == [
        {"data.nu": 0.1, "seed": 7},
        {"data.nu": 0.1, "seed": 8},
        {"data.nu": 0.2, "seed": 7},
        {"data.nu": 0.2, "seed": 8},
    ]
    assert [p.config.seed for p in pts] == [7, 8, 7, 8]
    assert sweep.parse_values("0:1:5") == [0.0, 0.25, 0.5, 0.75, 1.0]
