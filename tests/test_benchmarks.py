"""The benchmark scripts' command lines (running them is what benchmarks/ is for; see docs/performance.md)."""

from pathlib import Path

import pytest

from tests.helpers import load_script


def test_bench_sampling_takes_compare_official_in_both_spellings(capsys):
    """--compare_official is the documented flag; issue #13's --compare-official is accepted as the same option."""
    parser = load_script("bench_sampling", folder="benchmarks").build_parser()
    for flag in ("--compare_official", "--compare-official"):
        assert parser.parse_args([flag, "/tmp/MoScale"]).compare_official == Path("/tmp/MoScale")
    assert parser.parse_args([]).compare_official is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    usage = capsys.readouterr().out
    assert "--compare_official" in usage and "--compare-official" not in usage
