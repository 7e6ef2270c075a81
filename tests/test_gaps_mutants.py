"""scripts/mutants.py's mutant list still applies to the code (each `old` text occurs exactly once and
the mutated module compiles), and applying a mutant never touches the worktree."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("gradrank_mutants", ROOT / "scripts" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_mutant_applies_cleanly():
    tool = _tool()
    assert len(tool.MUTANTS) >= 60
    assert tool.check(tool.MUTANTS) == []
    assert all(tool.tests_of(mt) for mt in tool.MUTANTS)
    assert all((ROOT / t.split("::")[0]).is_file() for mt in tool.MUTANTS for t in tool.tests_of(mt))


def test_apply_refuses_an_ambiguous_or_missing_edit():
    tool = _tool()
    mt = tool.Mutant("x", "f.py", "a", "b", "sign")
    assert tool.apply("xay", mt) == "xby"
    for text in ("xy", "aa"):
        with pytest.raises(ValueError):
            tool.apply(text, mt)
