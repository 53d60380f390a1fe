"""The code style CI enforces: `ruff check` and `ruff format --check` (configured in pyproject.toml) are clean."""

import subprocess
import sys

from tests.shared_data import ROOT


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args, str(ROOT)], capture_output=True, text=True)


def test_ruff_lint_is_clean():
    result = ruff("check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout + result.stderr
