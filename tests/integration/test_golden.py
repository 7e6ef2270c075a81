"""The golden outputs' cheap subset: `scripts/golden.py --check --quick` reruns the quick cases through the
command line and compares every field with tests/golden/<case>.json (the rule: the script's docstring)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_golden_cases_agree_with_the_pinned_outputs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "golden.py"), "--check", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, f"golden check failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    assert "0 failed" in proc.stdout
