"""The code style CI enforces: `ruff check` and `ruff format --check` (configured in pyproject.toml) are clean, and
no test module imports another (what tests share lives in tests/helpers.py and tests/shared_data.py)."""

import re
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


def test_no_test_module_imports_another():
    importing = re.compile(r"^\s*(from|import)\s+(tests\.)?([\w.]*\.)?test_\w*", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if importing.search(path.read_text())
    ]
    assert not offenders, (
        f"these tests import another test module; move what they share to tests/helpers.py: {offenders}"
    )
