"""scripts/docs_numbers.py: the quick cases' numbers quoted in docs/ are what their commands give today,
a changed number in a page is reported stale (naming the row), and --write puts the command's rows back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "scripts" / "docs_numbers.py"
ROW = "| GaLore at its defaults | 128 | 200 | 1 | 8.20e-6 | −0.6 % |"


def tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The quick cases run once (kept, so the tests below reread their result directories)."""
    runs = tmp_path_factory.mktemp("docs-runs")
    proc = tool("--check", "--quick", "--runs", runs)
    return runs, proc


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_docs_quote_the_numbers_the_quick_commands_give_today(runs):
    _, proc = runs
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok      advisor_short" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_changed_number_is_stale_and_write_restores_the_commands_rows(runs, tmp_path):
    kept, _ = runs
    page = tmp_path / "docs" / "advisor.md"
    page.parent.mkdir()
    original = (ROOT / "docs" / "advisor.md").read_text(encoding="utf-8")
    assert original.count(ROW) == 1
    page.write_text(original.replace(ROW, ROW.replace("8.20e-6", "8.30e-6")), encoding="utf-8")
    check = tool("--check", "--quick", "--runs", kept, "--root", tmp_path)
    assert check.returncode == 1 and "STALE   advisor_short" in check.stdout
    assert "page:    " + ROW.replace("8.20e-6", "8.30e-6") in check.stdout and "command: " + ROW in check.stdout
    write = tool("--write", "--quick", "--runs", kept, "--root", tmp_path)
    assert write.returncode == 0, write.stdout + write.stderr
    assert page.read_text(encoding="utf-8") == original  # only the stale row changed back
