"""LayerResult (gradrank/studies/layers.py) is a typed record: its measures are core/records.py records
when computed and after reading back, layers.json keeps its layout (every key, None as null), and a
damaged entry is an InputError naming the field."""

from __future__ import annotations

import json

import pytest
import torch

from gradrank import config
from gradrank.core import records as R
from gradrank.errors import InputError
from gradrank.models import registry as spec
from gradrank.studies import layers as layers_mod


def _result():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 1), torch.nn.Flatten(0)).double()
    problem = spec.Problem("seq", model, [(x, y)], lambda f, t: 0.5 * ((f - t) ** 2).mean())
    return layers_mod.analyze_problem(problem, config.load())


def test_layer_result_fields_are_records_and_round_trip_through_json():
    """Computed and read back: norms, shares, rank, alignment, captured and spike are records; the JSON
    keeps norms.reg / norms.bulk as null (the old layout), and reading it back gives the same dict."""
    res = _result()
    r = res.layers[0]
    for field, kind in (("norms", R.Norms), ("shares", R.Shares), ("rank", R.Ranks), ("alignment", R.Alignment)):
        assert isinstance(getattr(r, field), kind), field
    assert isinstance(r.captured, R.Directions) and isinstance(r.spike, layers_mod.LayerSpike)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["layers"][0]["norms"]["reg"] is None and "bulk" in d["layers"][0]["norms"]
    back = layers_mod.LayersResult.from_dict(d)
    assert isinstance(back.layers[0].norms, R.Norms) and back.layers[0].norms.S1 == r.norms.S1
    assert [x.to_dict() for x in back.layers] == d["layers"]
    assert r.norms["S1"] == r.norms.S1 and r.spike["source"] == r.spike.source  # read by JSON key too


def test_damaged_layer_entry_names_the_field():
    d = json.loads(json.dumps(_result().to_dict()))
    d["layers"][1]["norms"]["S1"] = "big"
    with pytest.raises(InputError, match=r"layers\.json: field 'layers\[1\]\.norms\.S1'"):
        layers_mod.LayersResult.from_dict(d)
