"""The report: mean and 95% interval of each metric, and the Markdown table beside the paper's values."""

import numpy as np
import pytest

from moscale.evaluation.protocol import summarize
from moscale.evaluation.report import markdown_table


def test_summary_and_table():
    repeats = [{"top1": 0.5, "fid": 0.1, "real_top1": 0.6}, {"top1": 0.7, "fid": 0.3, "real_top1": 0.6}]
    summary = summarize(repeats)
    assert summary["top1"]["mean"] == pytest.approx(0.6)
    assert summary["top1"]["ci95"] == pytest.approx(1.96 * 0.1 / np.sqrt(2))
    table = markdown_table(summary, "humanml3d", "t2m", 2)
    assert "| R-precision Top-1 ↑ | 0.540 | 0.600 ± 0.139 | 0.600 ± 0.000 |" in table
    assert "| FID ↓ | 0.046 | 0.200 ± 0.139 | - |" in table
    assert "0.540" not in markdown_table(summary, "humanml3d", "contrastive", 2)
